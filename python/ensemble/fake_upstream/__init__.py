"""A local fake of the OpenAI, Anthropic and Gemini HTTP APIs for tests and benchmarks.

Run ``python -m ensemble.fake_upstream --port P``; see ``app`` for routes and the control API,
``content`` for the deterministic answers and token counts, ``behavior`` for the fault model.
"""

from .app import FakeUpstream, create_app
from .behavior import Behavior, EndpointConfig

__all__ = ["Behavior", "EndpointConfig", "FakeUpstream", "create_app"]
