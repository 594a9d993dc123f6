"""OpenLineage run events for a night, sent with openlineage-python's HTTP transport.

One OpenLineage run a night's attempt: START once the night is planned, then COMPLETE (committed)
or FAIL (not committed, with the error). The input is the URI the night read (a folder, prefix,
manifest or shard); the outputs are the `clips` and `videos` tables, named by OpenLineage's
dataset naming (`s3://bucket` + key path, `file` + absolute path; Iceberg: the catalog's tables),
COMPLETE with the clips table's schema and the rows the night wrote.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any
from urllib.parse import urlsplit

TABLES = ("clips", "videos")


def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a storage URI by OpenLineage's naming: the scheme and authority
    (`s3://bucket`), then the path; a local path is namespace `file`, name its absolute path."""
    from mmbatch.trust import redact_uri

    uri = redact_uri(uri)
    if "://" not in uri or uri.startswith("file://"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return "file", os.path.abspath(path)
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}", parts.path.strip("/") or "/"


def output_datasets(output_uri: str, output_config=None) -> dict[str, tuple[str, str]]:
    """Each table's (namespace, name): Iceberg's by catalog and table name, else the folders."""
    if output_config is not None and output_config.format == "iceberg":
        ice = output_config.iceberg
        return {t: (f"iceberg://{ice.catalog_name}", f"{ice.namespace}.{ice.table_prefix}{t}") for t in TABLES}
    return {t: dataset_name(f"{output_uri.rstrip('/')}/{t}") for t in TABLES}


class NightLineage:
    """A night's watcher that sends its OpenLineage run events (run.lineage)."""

    what = "the OpenLineage endpoint"

    def __init__(self, lineage_config, input_uri: str, output_uri: str, run_date, output_config=None):
        from openlineage.client import OpenLineageClient
        from openlineage.client.uuid import generate_new_uuid

        transport: dict[str, Any] = {"type": "http", "url": lineage_config.url, "endpoint": lineage_config.endpoint,
                                     "timeout": lineage_config.timeout_s}
        key = os.environ.get(lineage_config.api_key_env) if lineage_config.api_key_env else None
        if key:
            transport["auth"] = {"type": "api_key", "apiKey": key}
        self.client = OpenLineageClient(config={"transport": transport})
        self.config, self.run_id = lineage_config, str(generate_new_uuid())
        self.input, self.outputs = dataset_name(input_uri), output_datasets(output_uri, output_config)
        self.run_date = run_date

    def _emit(self, state: str, run_facets: dict | None = None, output_facets: dict | None = None,
              rows: dict[str, int] | None = None) -> None:
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import job_type_job, nominal_time_run
        from openlineage.client.facet_v2 import output_statistics_output_dataset as statistics

        nominal = nominal_time_run.NominalTimeRunFacet(nominalStartTime=f"{self.run_date.isoformat()}T00:00:00Z")
        job_type = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="MMBATCH", jobType="JOB")
        outputs = [OutputDataset(ns, name, facets=(output_facets or {}).get(table, {}), outputFacets={
                       "outputStatistics": statistics.OutputStatisticsOutputDatasetFacet(rowCount=rows[table])}
                       if rows else {}) for table, (ns, name) in self.outputs.items()]
        self.client.emit(RunEvent(
            eventType=getattr(RunState, state), eventTime=dt.datetime.now(dt.timezone.utc).isoformat(),
            run=Run(runId=self.run_id, facets={"nominalTime": nominal, **(run_facets or {})}),
            job=Job(namespace=self.config.namespace, name=self.config.job_name, facets={"jobType": job_type}),
            inputs=[InputDataset(*self.input)], outputs=outputs))

    def started(self, run_id: str, videos: int) -> None:
        self._emit("START")

    def progress(self, figures: dict[str, float]) -> None:
        pass  # OpenLineage has RUNNING events, but lineage systems read the run's ends

    def finished(self, record: dict[str, Any], exit_code: int) -> None:
        from openlineage.client.facet_v2 import schema_dataset

        from mmbatch.schema import CLIPS_SCHEMA, VIDEOS_SCHEMA

        def schema(arrow) -> Any:
            return schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type)) for f in arrow])

        counts = record.get("counts") or {}
        facets = {"clips": {"schema": schema(CLIPS_SCHEMA)}, "videos": {"schema": schema(VIDEOS_SCHEMA)}}
        self._emit("COMPLETE", output_facets=facets,
                   rows={"clips": int(counts.get("clips", 0)), "videos": int(counts.get("inputs", 0))})

    def failed(self, exit_code: int, reason: str) -> None:
        from openlineage.client.facet_v2 import error_message_run

        self._emit("FAIL", run_facets={"errorMessage": error_message_run.ErrorMessageRunFacet(
            message=f"exit {exit_code}: {reason}", programmingLanguage="python")})
