"""The versions of each model the cache has seen, and resolution of a request to one version.

"latest" resolves through the index, which :meth:`VersionIndex.refresh` (called by the cache's poll)
keeps current; an unknown name, or a version the index does not know yet, is listed on demand. Listings
are single flight per name, and failed lookups are remembered in the shared :class:`FailureMemory`.
"""

from __future__ import annotations

import asyncio

from thrifty.errors import ThriftyError
from thrifty.models.errors import ModelLoadError, ModelNotFoundError
from thrifty.models.failures import FailureMemory, copy_error, retrieve_outcome
from thrifty.models.names import ModelKey, parse_version, validate_model_name
from thrifty.models.source import ModelSource


class VersionIndex:
    def __init__(self, source: ModelSource, failures: FailureMemory) -> None:
        self._source = source
        self._failures = failures
        self._versions: dict[str, tuple[int, ...]] = {}
        # The last listing of every name, also of names the index forgot (figures only, never resolution):
        # `thrifty get` shows the versions of models asked for since the start, not only cached ones.
        self._last_listed: dict[str, tuple[int, ...]] = {}
        self._listings: dict[str, asyncio.Task[tuple[int, ...]]] = {}

    def names(self) -> list[str]:
        return list(self._versions)

    def get(self, name: str) -> tuple[int, ...]:
        """Known versions, ascending; empty when the name is unknown (or gone from the source)."""
        return self._versions.get(name, ())

    def last_listed(self, name: str) -> tuple[int, ...]:
        """The versions of the name's last successful listing (possibly stale); empty when gone."""
        return self._last_listed.get(name, ())

    def forget(self, name: str) -> None:
        """Out of the index: the next request lists the name again."""
        self._versions.pop(name, None)

    def tasks(self) -> list[asyncio.Task[tuple[int, ...]]]:
        return list(self._listings.values())

    async def resolve(self, name: str, version: str | int | None) -> ModelKey:
        """Validate and resolve; raises ModelNameError, ModelNotFoundError or ModelLoadError."""
        name = validate_model_name(name)
        wanted = parse_version(version)
        if wanted is not None:
            self._failures.check((name, wanted))
        versions = self._versions.get(name)
        # A failed listing is remembered for what it was asked for: under (name, None) only when the index
        # knew nothing of the name; a pinned version the index lacks fails alone, the known versions serve on.
        if versions is None:
            self._failures.check((name, None))
            try:
                versions = await self.refresh(name)
            except ThriftyError as exc:
                self._failures.remember((name, None), exc)
                raise copy_error(exc) from None
        elif wanted is not None and wanted not in versions:
            try:
                versions = await self.refresh(name)
            except ThriftyError as exc:
                self._failures.remember((name, wanted), exc)
                raise copy_error(exc) from None
        if wanted is None:
            return ModelKey(name, versions[-1])
        if wanted not in versions:
            error = ModelNotFoundError(
                f"model {name!r} has no version {wanted} (versions: {list(versions)})",
                details={"model": name, "version": wanted},
            )
            self._failures.remember((name, wanted), error)
            raise error
        return ModelKey(name, wanted)

    async def refresh(self, name: str) -> tuple[int, ...]:
        """List ``name``'s versions now; concurrent callers share one listing."""
        task = self._listings.get(name)
        if task is None:
            task = asyncio.create_task(self._list(name))
            self._listings[name] = task

            def done(finished: asyncio.Task[tuple[int, ...]]) -> None:
                if self._listings.get(name) is finished:
                    del self._listings[name]

            task.add_done_callback(done)
            task.add_done_callback(retrieve_outcome)
        return await asyncio.shield(task)

    async def _list(self, name: str) -> tuple[int, ...]:
        try:
            versions = tuple(sorted(await asyncio.to_thread(self._source.list_versions, name)))
        except ModelNotFoundError:
            self._versions.pop(name, None)
            self._last_listed.pop(name, None)
            raise
        except ThriftyError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"could not list the versions of model {name!r}: {type(exc).__name__}: {exc}",
                details={"model": name},
            ) from exc
        if not versions:
            self._versions.pop(name, None)
            self._last_listed.pop(name, None)
            raise ModelNotFoundError(f"model {name!r} has no versions", details={"model": name})
        self._versions[name] = versions
        self._last_listed[name] = versions
        return versions
