"""OpenLineage run events for every invocation (opt-in: ``DBT_RUNNER_OPENLINEAGE__ENABLED``).

Needs ``pip install 'dbt-runner[openlineage]'`` (the ``openlineage-python`` client);
this module, and so the client, is imported only by a session whose settings
turn the feature on. Where the events go is the client's own configuration
(``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, ``OPENLINEAGE_CONFIG``).

Per invocation (one dbt command, all its attempts):

* the **command's run**: job ``<project>.<command>`` (``foreign_shop.build``), a
  START when the invocation begins, COMPLETE or FAIL (with the error) when it ends;
* a **run per model, seed and snapshot**: job = the node's unique_id
  (``model.foreign_shop.stg_orders``), START when dbt starts the node and COMPLETE
  or FAIL when it finishes (both from the session's node events,
  :class:`~dbt_runner._events.EventRelay`), its parent the command's run. Its
  **inputs** are the relations it reads (``ref`` and ``source``; an ephemeral
  model stands for its own inputs), its **output** its own relation, named by
  :mod:`dbt_runner._lineage` (namespace ``postgres://host:port``, name
  ``database.schema.table``).

Emitting never breaks a run: a transport's failure is logged (once per invocation)
and the dbt command goes on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._exceptions import ConfigurationError
from ._lineage import WRITING_TYPES, Location, target_location

if TYPE_CHECKING:
    from ._dbt import GraphNode
    from ._events import NodeEvent
    from ._results import RunResult
    from ._settings import Settings

__all__ = ["Lineage"]

log = logging.getLogger("dbt_runner.openlineage")

_JOB_TYPES = {"model": "MODEL", "seed": "SEED", "snapshot": "SNAPSHOT"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbt-runner")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


#: OpenLineage's producer URI of these events: this package and its version
PRODUCER = f"urn:dbt-runner:{_version()}"


class Lineage:
    """The OpenLineage emitter of one session (see the module doc).

    ``start`` / ``end`` frame each invocation, ``use_manifest`` gives it the parsed
    project, and the session's event relay calls ``on_node`` from dbt's threads.
    """

    def __init__(self, settings: Settings, project_dir: Path) -> None:
        try:
            from openlineage.client import OpenLineageClient
        except ImportError as exc:
            raise ConfigurationError(
                "DBT_RUNNER_OPENLINEAGE__ENABLED=true needs the OpenLineage client: "
                "pip install 'dbt-runner[openlineage]'"
            ) from exc
        self._client = OpenLineageClient()
        self._settings = settings
        self.namespace = (
            settings.openlineage.namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or "default"
        )
        self.project = _project_name(project_dir)
        self._lock = threading.Lock()
        self._location: Location | None = None
        self._graph: dict[str, GraphNode] = {}
        self._graph_of: Any = None  # the manifest ``_graph`` was read from
        self._run: _CommandRun | None = None
        log.info(
            "OpenLineage: events of job namespace %r via the %s transport",
            self.namespace,
            getattr(self._client.transport, "kind", "?"),
        )

    # ------------------------------------------------------------------ the command
    def start(self, command: str) -> None:
        """An invocation begins: the command's START."""
        run = _CommandRun(command, _uuid(), f"{self.project}.{command}")
        with self._lock:
            self._run = run
        self._emit("START", run.job, run.run_id, facets=self._job_facets("JOB"))

    def use_manifest(self, manifest: Any) -> None:
        """The parsed project this attempt runs with (for the nodes' inputs and outputs)."""
        if manifest is None or manifest is self._graph_of:
            return
        from ._dbt import node_graph

        graph = node_graph(manifest)
        with self._lock:
            self._graph, self._graph_of = graph, manifest

    def end(self, result: RunResult | None, error: str | None = None) -> None:
        """The invocation ended: FAIL for nodes still open, then the command's COMPLETE/FAIL."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return
        for uid, node_run in list(run.nodes.items()):
            self._node_end(run, uid, node_run, "FAIL", "still running when the command ended")
        if error is None and result is not None and not result.success:
            error = result.error.message if result.error else "dbt reported failure"
        elif error is None and result is None:
            error = "the invocation did not return a result"
        state = "COMPLETE" if error is None else "FAIL"
        self._emit(state, run.job, run.run_id, facets=self._job_facets("JOB"), error=error)

    # ------------------------------------------------------------------ the nodes
    def on_node(self, event: NodeEvent) -> None:
        """The relay's callback (dbt's threads): a model, seed or snapshot started or ended."""
        if event.resource_type not in WRITING_TYPES:
            return
        with self._lock:
            run = self._run
            node = self._graph.get(event.unique_id)
            if run is None or (node is not None and node.relation_name is None):
                return  # no command, or an ephemeral model: no relation of its own
            if event.event == "node_start":
                node_run = _uuid()
                run.nodes[event.unique_id] = node_run
            else:
                node_run = run.nodes.pop(event.unique_id, "")
        if event.event == "node_start":
            self._emit(
                "START",
                event.unique_id,
                node_run,
                parent=run,
                datasets=self._datasets(event.unique_id),
                facets=self._job_facets(_JOB_TYPES[event.resource_type]),
            )
        elif node_run:  # a node that finished without starting (skipped) had no run
            ok = event.status == "success"
            state = "COMPLETE" if ok else "FAIL"
            message = None if ok else (event.message or f"dbt status {event.status}")
            self._node_end(run, event.unique_id, node_run, state, message)

    def _node_end(
        self, run: _CommandRun, uid: str, node_run: str, state: str, error: str | None
    ) -> None:
        run.nodes.pop(uid, None)
        kind = uid.split(".", 1)[0]
        self._emit(
            state,
            uid,
            node_run,
            parent=run,
            datasets=self._datasets(uid),
            facets=self._job_facets(_JOB_TYPES.get(kind, "JOB")),
            error=error,
        )

    def _datasets(self, uid: str) -> tuple[list[str], str | None]:
        """(input relation names, output relation name) of a node, from the manifest."""
        with self._lock:
            graph = self._graph
        node = graph.get(uid)
        if node is None:
            return [], None
        inputs: list[str] = []
        seen: set[str] = set()
        todo = list(node.parents)
        while todo:
            parent_id = todo.pop(0)
            if parent_id in seen:
                continue
            seen.add(parent_id)
            parent = graph.get(parent_id)
            if parent is None:
                continue
            if parent.relation_name:
                inputs.append(parent.relation_name)
            elif parent.resource_type == "model":  # ephemeral: read what it reads
                todo.extend(parent.parents)
        return inputs, node.relation_name

    # ------------------------------------------------------------------ events
    def _where(self) -> Location | None:
        if self._location is None:
            try:
                self._location = target_location(self._settings)
            except ConfigurationError as exc:
                log.warning("OpenLineage: no datasets (%s)", exc)
                self._location = Location("?", None, None, None)
        return self._location if self._location.namespace is not None else None

    def _job_facets(self, job_type: str) -> dict[str, Any]:
        from openlineage.client.facet_v2 import job_type_job

        return {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DBT", jobType=job_type
            )
        }

    def _emit(
        self,
        state: str,
        job_name: str,
        run_id: str,
        *,
        facets: Mapping[str, Any],
        parent: _CommandRun | None = None,
        datasets: tuple[list[str], str | None] = ([], None),
        error: str | None = None,
    ) -> None:
        try:
            event = self._event(state, job_name, run_id, facets, parent, datasets, error)
            self._client.emit(event)
        except Exception as exc:  # a transport's failure never breaks the dbt command
            run = self._run or parent
            if run is None or not run.warned:
                log.warning(
                    "OpenLineage: could not emit %s of %s (%s: %s)",
                    state,
                    job_name,
                    type(exc).__name__,
                    exc,
                )
            if run is not None:
                run.warned = True

    def _event(
        self,
        state: str,
        job_name: str,
        run_id: str,
        facets: Mapping[str, Any],
        parent: _CommandRun | None,
        datasets: tuple[list[str], str | None],
        error: str | None,
    ) -> Any:
        from openlineage.client.event_v2 import (
            InputDataset,
            Job,
            OutputDataset,
            Run,
            RunEvent,
            RunState,
        )
        from openlineage.client.facet_v2 import error_message_run, parent_run

        run_facets: dict[str, Any] = {}
        if parent is not None:
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=parent.run_id),
                job=parent_run.Job(namespace=self.namespace, name=parent.job),
            )
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error, programmingLanguage="SQL" if parent else "PYTHON"
            )
        inputs: list[Any] = []
        outputs: list[Any] = []
        where = self._where()
        relations, output = datasets
        if where is not None and where.namespace is not None:
            for relation in relations:
                name = where.dataset_name(relation)
                if name:
                    inputs.append(InputDataset(namespace=where.namespace, name=name))
            name = where.dataset_name(output)
            if name:
                outputs.append(OutputDataset(namespace=where.namespace, name=name))
        return RunEvent(
            eventType=getattr(RunState, state),
            eventTime=datetime.now(timezone.utc).isoformat(),
            run=Run(runId=run_id, facets=run_facets),
            job=Job(namespace=self.namespace, name=job_name, facets=dict(facets)),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )


class _CommandRun:
    """The command's run while it lasts, and the runs of its nodes still open."""

    def __init__(self, command: str, run_id: str, job: str) -> None:
        self.command, self.run_id, self.job = command, run_id, job
        self.nodes: dict[str, str] = {}
        self.warned = False


def _uuid() -> str:
    from openlineage.client.uuid import generate_new_uuid

    return str(generate_new_uuid())


def _project_name(project_dir: Path) -> str:
    """The ``name:`` of the dbt project (the jobs' prefix)."""
    try:
        data = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else project_dir.name
