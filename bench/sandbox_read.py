"""Benchmark: a full paged read of a large sandbox Salesforce org through simple-salesforce.

Prints construction time, records/s of `query_all_iter` (pages of 2,000 over verified HTTPS, the
client in the same process as the server, so CPU time covers both) and the process's peak RSS.
Not a test.

    .venv/bin/python bench/sandbox_read.py [--accounts 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import time

from connectors.sandbox.server import Sandbox

SOQL = ("SELECT Id, Name, AccountNumber, CurrencyIsoCode, BillingCountryCode, Credit_Limit__c, "
        "Credit_Hold__c, SystemModstamp FROM Account ORDER BY SystemModstamp, Id")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    began = time.perf_counter()
    with Sandbox(accounts=args.accounts, seed=args.seed, sides=("salesforce",)) as sandbox:
        started = time.perf_counter() - began
        print(f"sandbox with {args.accounts:,} accounts up in {started:.3f} s, "
              f"peak RSS {peak_rss_mib():.0f} MiB")
        sf = sandbox.salesforce_client()
        began, cpu = time.perf_counter(), time.process_time()
        count = 0
        for _ in sf.query_all_iter(SOQL):
            count += 1
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        calls = sandbox.counters.total("salesforce")
        print(f"read {count:,} records in {elapsed:.1f} s ({count / elapsed:,.0f} records/s; "
              f"{cpu:.1f} s CPU for server and client together, {count / cpu:,.0f} records per "
              f"CPU-second; {calls:,} API calls), peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
