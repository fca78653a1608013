"""Vendor contract fixtures: the key sets of the vendor's example responses and their extractor."""
