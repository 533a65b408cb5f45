"""The tables' sparse indexes and TTL as the stack declares them are the ones the runtime code queries and writes
(cdk/ imports no runtime code: the names are shared, so a test holds them together)."""

from functions.adapters.aws import job_store, review_store


def _table(synthesized, prefix: str) -> dict:
    return next(
        t["Properties"] for n, t in synthesized.resources("AWS::DynamoDB::Table").items() if n.startswith(prefix)
    )


def _index(table: dict, name: str) -> tuple[list[tuple[str, str, str]], str]:
    index = next(i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == name)
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    keys = [(k["AttributeName"], k["KeyType"], types[k["AttributeName"]]) for k in index["KeySchema"]]
    return keys, index["Projection"]["ProjectionType"]


def test_the_job_table_has_the_open_jobs_index_and_the_ttl_the_job_store_writes(synthesized):
    table = _table(synthesized, "GpuJobs")
    keys, projection = _index(table, job_store.OPEN_JOBS_INDEX)
    assert keys == [(job_store.OPEN_JOB_ATTRIBUTE, "HASH", "S"), ("submitted_at", "RANGE", "N")]
    assert projection == "KEYS_ONLY"  # the task token stays out of the index
    assert table["TimeToLiveSpecification"] == {"AttributeName": job_store.TTL_ATTRIBUTE, "Enabled": True}


def test_the_review_table_has_the_sweep_index_the_review_store_queries(synthesized):
    keys, projection = _index(_table(synthesized, "ReviewReviews"), review_store.SWEEP_INDEX)
    assert keys == [(review_store.SWEEP_QUEUE, "HASH", "S"), (review_store.SWEEP_AT, "RANGE", "N")]
    assert projection == "KEYS_ONLY"
