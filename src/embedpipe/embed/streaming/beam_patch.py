"""A workaround for a bug of Beam's Python direct runner that loses counters, applied only where needed.

The BundleBasedDirectRunner (what the streaming job runs on locally) gives each bundle a new
MetricsContainer, but its per-thread `StateSampler.scoped_state` caches the state of a step by name,
with the container of the step's first bundle on that thread: increments of later bundles land in a
container that was already reported, and the job's counts come out short. `count_every_bundle()`
patches `scoped_state`, for the length of a local run, so that a step whose cached state holds another
container gets a new state. Runners that build their own samplers per bundle (Dataflow) are unaffected.

The patch reaches into Beam internals (`StateSampler._states_by_name`), so it is applied only on the
Beam versions it was written and checked for (PATCHED_VERSIONS); on any other version it logs a warning
and patches nothing. After a Beam upgrade, run tests/unit/test_embed_streaming.py: if the counts come
out short, the bug is still there; check that `scoped_state` is unchanged and add the version.
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)

#: (major, minor) versions of apache_beam that have the bug and were checked with this patch.
PATCHED_VERSIONS = ((2, 77),)


def needs_patch(version: str) -> bool:
    """Whether the apache_beam `version` ("2.77.0", "2.77.1rc1") is one the patch is for.

    Example:
        >>> needs_patch("2.77.0"), needs_patch("2.78.0")
        (True, False)
    """
    major, _, rest = version.partition(".")
    minor = rest.split(".", 1)[0]
    if not (major.isdigit() and minor.isdigit()):
        return False
    return (int(major), int(minor)) in PATCHED_VERSIONS


@contextlib.contextmanager
def count_every_bundle():
    """Works around the direct-runner bug that loses counters, for the length of a local run.

    On a Beam version not in PATCHED_VERSIONS nothing is patched and a warning says so.
    """
    import apache_beam

    if not needs_patch(apache_beam.__version__):
        log.warning(
            "apache_beam %s: the direct-runner counter workaround (written for %s) is not applied; if this Beam "
            "still has the bug, the streaming job's local counts come out short (see embedpipe.embed.streaming.beam_patch)",
            apache_beam.__version__,
            ", ".join(f"{major}.{minor}" for major, minor in PATCHED_VERSIONS),
        )
        yield
        return
    from apache_beam.runners.worker import statesampler

    original = statesampler.StateSampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is not None and state.metrics_container is not metrics_container:
            for name in [name for name, cached in self._states_by_name.items() if cached is state]:
                del self._states_by_name[name]
            state = original(self, name_context, state_name, io_target, metrics_container)
        return state

    statesampler.StateSampler.scoped_state = scoped_state
    try:
        yield
    finally:
        statesampler.StateSampler.scoped_state = original


__all__ = ["PATCHED_VERSIONS", "count_every_bundle", "needs_patch"]
