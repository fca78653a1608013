"""Reporting over the loaded data: SLA configuration and calendars, the SQL view runner, the report data and its terminal and HTML renderings."""
