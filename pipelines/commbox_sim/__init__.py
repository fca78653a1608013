"""CommBox (Cirrus Digital) API simulator: a real HTTP server on loopback over a generated account.

    from pipelines.commbox_sim import Simulator, SimConfig
    sim = Simulator(SimConfig(seed=7, conversations=2000))
    base_url = sim.start()          # background thread, ephemeral port
    ...
    sim.stop()

    sim = Simulator(SimConfig.from_profile("docs", conversations=300))   # the vendor's documented shapes

See docs/simulator.md for the endpoints, switches and semantics, and
docs/simulator-profiles.md for the profiles, the paging switches and ``mutate(bulk=...)``.
"""

from .cli import main
from .clock import SimClock
from .config import BAD_PAYLOADS, PROFILES, QUIRKS, SimConfig
from .simulator import Simulator, Truth

__all__ = ["BAD_PAYLOADS", "PROFILES", "QUIRKS", "SimClock", "SimConfig", "Simulator", "Truth", "main"]
