"""moe-migrate: migrate vLLM-based code off the removed ``SharedFusedMoE`` class."""

__version__ = "0.1.0"
