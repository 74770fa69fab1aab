"""``usage metrics load|set|list`` and ``usage ingest`` (JSON Lines and CSV) over a SQLite file
(the services underneath are tested on both databases), through to the dry run's lines."""
from __future__ import annotations

import json

from click.testing import CliRunner

from jobs.cli import main


def _cli(url: str, *args: str):
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def test_metrics_from_toml_then_events_from_jsonl_and_csv(sqlite_engine, tmp_path) -> None:
    """storage: max of the values per region, at 0.50 a unit; events in March:
    eu 10, 40 (max 40 -> 20.00), us 30 (-> 15.00); an env=test event filtered out."""
    url = str(sqlite_engine.url)
    for args in (["products", "add", "--sku", "GB", "--name", "Storage", "--kind", "usage"],
                 ["prices", "set", "GB", "--currency", "USD", "--from", "2026-01-01",
                  "--price", "0.50"],
                 ["accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id", "A1",
                  "--tax-exempt"]):
        res = _cli(url, *args)
        assert res.exit_code == 0, res.output
    toml = tmp_path / "metrics.toml"
    toml.write_text('[metrics.storage]\naggregation = "max"\nproduct = "GB"\n'
                    'group_by = "region"\nfilters = { env = ["prod"] }\n')
    assert _cli(url, "usage", "metrics", "load", str(toml)).exit_code == 0
    again = _cli(url, "usage", "metrics", "load", str(toml))
    assert "unchanged" in again.output
    listed = json.loads(_cli(url, "usage", "metrics", "list", "--json").output)
    assert [(m["code"], m["aggregation"], m["filters"]) for m in listed] == [
        ("storage", "max", {"env": ["prod"]})]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in [
        {"event_id": "s1", "account": "A1", "metric": "storage",
         "timestamp": "2026-03-02T00:00:00Z", "value": "10",
         "properties": {"region": "eu", "env": "prod"}},
        {"event_id": "s2", "account": "A1", "metric": "storage",
         "timestamp": "2026-03-05T00:00:00Z", "value": "30",
         "properties": {"region": "us", "env": "prod"}},
        {"event_id": "s3", "account": "A1", "metric": "storage",
         "timestamp": "2026-03-06T00:00:00Z", "value": "99",
         "properties": {"region": "eu", "env": "test"}}]) + "\n{not json\n")
    res = _cli(url, "usage", "ingest", str(jsonl), "--json")
    assert res.exit_code == 1, res.output          # the bad line: rejected, the rest landed
    out = json.loads(res.output)
    assert (out["accepted"], out["rejected"]) == (3, 1)
    assert out["rejected_events"][0]["field"] == "line"
    csv = tmp_path / "events.csv"
    csv.write_text('event_id,account,metric,timestamp,value,properties\n'
                   's4,A1,storage,2026-03-09T00:00:00Z,40,"{""region"": ""eu"", '
                   '""env"": ""prod""}"\n'
                   's1,A1,storage,2026-03-02T00:00:00Z,10,\n')
    res = _cli(url, "usage", "ingest", str(csv))
    assert res.exit_code == 0, res.output
    assert "accepted 1, duplicates 1, rejected 0" in res.output
    res = _cli(url, "bill-run", "--date", "2026-04-01", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    [inv] = json.loads(res.output)["invoices"]
    assert [(ln["description"].split(":")[0], ln["amount_minor"]) for ln in inv["line_items"]] == [
        ("Storage [storage region=eu]", 2000), ("Storage [storage region=us]", 1500)]


def test_metrics_of_the_config_file_are_set_by_bill_run_and_by_load(sqlite_engine,
                                                                      tmp_path) -> None:
    """``[metrics.CODE]`` in the main config: a bill run (not a dry run) sets them before it
    rates, ``usage metrics load`` without a file sets them, identical ones change nothing, and
    a metric naming a product that does not exist stops the command (exit 2) naming it."""
    url = str(sqlite_engine.url)
    for args in (["products", "add", "--sku", "CALLS", "--name", "API calls", "--kind", "usage"],
                 ["prices", "set", "CALLS", "--currency", "USD", "--from", "2026-01-01",
                  "--price", "0.01"],
                 ["accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id", "A1",
                  "--tax-exempt"]):
        assert _cli(url, *args).exit_code == 0
    config = tmp_path / "lb.toml"
    config.write_text('[metrics.calls]\naggregation = "count"\nproduct = "CALLS"\n')
    with_config = ["--config", str(config)]
    dry = _cli(url, *with_config, "bill-run", "--date", "2026-03-01", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(_cli(url, "usage", "metrics", "list", "--json").output) == []
    events = tmp_path / "e.jsonl"     # 250 calls in February: 250 x 0.01 = 2.50
    events.write_text("\n".join(json.dumps(
        {"event_id": f"c{i}", "account": "A1", "metric": "calls",
         "timestamp": f"2026-02-{1 + i % 28:02d}T12:00:00Z", "value": "1"})
        for i in range(250)) + "\n")
    refused = _cli(url, "usage", "ingest", str(events), "--json")
    assert json.loads(refused.output)["accepted"] == 0       # no metric 'calls' yet
    loaded = _cli(url, *with_config, "usage", "metrics", "load")
    assert loaded.exit_code == 0 and "calls from 2000-01-01: set" in loaded.output
    assert _cli(url, "usage", "ingest", str(events)).exit_code == 0
    billed = _cli(url, *with_config, "bill-run", "--date", "2026-03-01", "--json")
    assert billed.exit_code == 0, billed.output
    [inv] = json.loads(billed.output)["invoices"]
    assert [ln["amount_minor"] for ln in inv["line_items"]] == [250]
    assert "unchanged" in _cli(url, *with_config, "usage", "metrics", "load").output
    config.write_text('[metrics.calls]\naggregation = "count"\nproduct = "NOPE"\n')
    bad = _cli(url, *with_config, "bill-run", "--date", "2026-04-01")
    assert bad.exit_code == 2
    assert "NOPE" in bad.output
    daemon = _cli(url, *with_config, "run", "--once", "--no-api")
    assert daemon.exit_code == 2 and "NOPE" in daemon.output
    config.write_text('[metrics.calls]\naggregation = "count"\n')
    shape = _cli(url, *with_config, "usage", "metrics", "list")
    assert shape.exit_code == 2 and "metrics.calls.product" in shape.output


def _usage_ledger(url: str) -> None:
    for args in (["products", "add", "--sku", "API", "--name", "API", "--kind", "usage"],
                 ["prices", "set", "API", "--currency", "USD", "--from", "2020-01-01",
                  "--price", "0.10"],
                 ["accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id", "A1",
                  "--tax-exempt"],
                 ["usage", "metrics", "set", "calls", "--aggregation", "sum", "--product",
                  "API"]):
        res = _cli(url, *args)
        assert res.exit_code == 0, res.output


def test_ingest_rejects_a_line_it_cannot_read_and_keeps_the_good(sqlite_engine,
                                                                  tmp_path) -> None:
    """A 5,000-digit value, a line nested past the parser's depth, a timestamp out of range
    once in UTC: each line rejected naming it (exit 1), the good line lands; no traceback."""
    url = str(sqlite_engine.url)
    _usage_ledger(url)
    ev = ('{"event_id": "%s", "account": "A1", "metric": "calls", "timestamp": "%s", '
          '"value": %s}')
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join([
        ev % ("g1", "2026-03-01T00:00:00Z", '"1"'),
        ev % ("b1", "2026-03-01T00:00:00Z", "1" + "0" * 5000),
        "[" * 100_000 + "]" * 100_000,
        ev % ("b2", "0001-01-01T00:00:00+01:00", '"1"')]) + "\n", encoding="utf-8")
    res = _cli(url, "usage", "ingest", str(jsonl), "--json")
    assert res.exit_code == 1, res.output[-300:]
    out = json.loads(res.stdout)
    assert (out["accepted"], out["rejected"]) == (1, 3)
    assert [(p["index"], p["field"]) for p in out["rejected_events"]] == [
        (1, "value"), (2, "line"), (3, "timestamp")]
    assert "nests too deeply" in out["rejected_events"][1]["message"]


def test_import_reads_a_bom_and_refuses_a_file_that_is_not_utf8(sqlite_engine,
                                                                tmp_path) -> None:
    """Excel's "CSV UTF-8" starts with a byte order mark: read, not refused for its header.
    A Latin-1 file: exit 2, one line naming the file, nothing imported (not a traceback)."""
    url = str(sqlite_engine.url)
    _usage_ledger(url)
    head = "event_id,account,product,quantity,occurred_at\n"
    bom = tmp_path / "bom.csv"
    bom.write_text(head + "u1,A1,API,1,2026-03-01T00:00:00Z\n", encoding="utf-8-sig")
    res = _cli(url, "usage", "import", str(bom))
    assert res.exit_code == 0, res.output
    assert "imported 1," in res.stdout
    latin = tmp_path / "latin.csv"
    latin.write_bytes((head + "u2,A\xe9,API,1,2026-03-01T00:00:00Z\n").encode("latin-1"))
    res = _cli(url, "usage", "import", str(latin))
    assert res.exit_code == 2, res.output
    [line] = res.stderr.splitlines()
    assert line.startswith("error: ") and str(latin) in line and "UTF-8" in line
    ingest = _cli(url, "usage", "ingest", str(latin))
    assert ingest.exit_code == 2 and "is not UTF-8" in ingest.stderr, ingest.output


def test_import_refuses_each_bad_row_naming_it_and_keeps_the_good(sqlite_engine,
                                                                   tmp_path) -> None:
    url = str(sqlite_engine.url)
    _usage_ledger(url)
    f = tmp_path / "u.csv"
    f.write_text("event_id,account,product,quantity,occurred_at\n"
                 "g1,A1,API,1,2026-03-01T00:00:00Z\n"
                 "b1,99999999999999999999,API,1,2026-03-01T00:00:00Z\n"
                 "b2,A1,API,1e400,2026-03-01T00:00:00Z\n"
                 "b3,A1,API,1,9999-12-31T23:59:59-01:00\n", encoding="utf-8")
    res = _cli(url, "usage", "import", str(f))
    assert res.exit_code == 1, res.output
    assert "imported 1, duplicates 0, errors 3" in res.stdout
    assert [ln.split(":")[0] + ":" + ln.split(": ")[1].split("=")[0]
            for ln in res.stderr.splitlines()] == [
        "row 3:account", "row 4:quantity", "row 5:occurred_at"]
    bill = _cli(url, "bill-run", "--date", "2026-04-01")
    assert bill.exit_code == 0, bill.output
