"""The 2017 opt-out decision as one hand-written DuckDB query: what a data
engineer would write instead of a rule engine.

    python bench/peers/duckdb_2017.py LOG.jsonl --out OUT.parquet [--threads N]
        [--compare RESULTS.jsonl|RESULTS.parquet] [--show 5]

The query reads a JSON Lines log (as `bench/generate.py` writes it), sets
aside the lines `msgpolicy audit` would reject, and writes one row per judged
message, `(message_id, outcome)`, to Parquet. `outcome` is one of
`no_policy`, `allowed`, `blocked`, `violation`, `indeterminate`, read the way
the shipped policies in `policies/2017-optout/` read it:

* Versions by the local calendar date of `sent_at` in the message's
  marketplace: before 2017-03-27 and outside the US before 2018-01-31 there
  is no policy; [2017-03-31, 2017-04-07) is the suspension (every rule off
  and one note, so `allowed`); from 2025-04-25 "[Important]" no longer opens
  the gate.
* Opt-out state: the record's `buyer_opted_out` when it gives one, else the
  latest valid buyer event for that buyer strictly before `sent_at` (an as-of
  join); unknown otherwise.
* The table of `decide_2017.py` (D1-D9) for seller messages; a buyer's own
  message is `allowed`. A quoted reply (D5) is a `reply_to` naming an earlier
  message of the same buyer whose text, normalised (quote marks `>` dropped,
  white space collapsed, lower case), occurs in the reply's normalised body.
  Unknown facts (opt-out state; the quoted message not in the log; no
  category) are enumerated as the engine does: one outcome if every value
  gives the same, else `indeterminate`.
* Rejected like the engine: invalid JSON (DuckDB's reader accepts a trailing
  comma, so a line ending in `,}` is refused here), missing or non-string
  ids, timestamps without a UTC offset (Unix seconds are taken as UTC, as
  pydantic does), unknown categories, channels, marketplaces or event types,
  a `buyer_opted_out` that is not a boolean (pydantic's lax strings such as
  "yes" count as booleans), attachments that are not a list of
  `{name, kind}`.

Deliberately left out, so `--compare` leaves such messages out or counts
them apart:

* Categories inferred from the text (a raw export without `category`): the
  query has no classifier, so such messages are enumerated over critical /
  non-critical and are not compared.
* The 2020 Communication Guidelines: this is the 2017 decision alone, so only
  messages whose engine result names no `2020-contact-guidelines` version are
  compared.
* The engine's quote check turns HTML bodies into text and uses Unicode case
  folding; the query compares the raw text in lower case. The engine also
  forgets a buyer message idle for more than `--history-days` of log time and
  follows file order (the query follows `sent_at`, the same for a sorted
  export). Duplicate `message_id`s are not set aside.
* Findings, rule ids, evidence and sources: only the outcome is produced.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

# The whole decision. {log} is the JSON Lines file, as a quoted SQL string.
QUERY = r"""
WITH
-- policies/2017-optout: half-open intervals of local dates; '*' = every marketplace.
versions(version, mk, valid_from, valid_to, important_honoured) AS (VALUES
    ('rollout',           'US', DATE '2017-03-27', DATE '2017-03-31', true),
    ('suspension',        'US', DATE '2017-03-31', DATE '2017-04-07', true),
    ('reinstated',        'US', DATE '2017-04-07', DATE '2018-01-31', true),
    ('all-marketplaces',  '*',  DATE '2018-01-31', DATE '2025-04-25', true),
    ('important-retired', '*',  DATE '2025-04-25', DATE '9999-12-31', false)),
-- policies/marketplaces.yaml
zones(mk, tz) AS (VALUES
    ('US', 'America/Los_Angeles'), ('CA', 'America/Toronto'), ('UK', 'Europe/London'),
    ('DE', 'Europe/Berlin'), ('FR', 'Europe/Paris'), ('IT', 'Europe/Rome'),
    ('ES', 'Europe/Madrid'), ('JP', 'Asia/Tokyo')),

-- Each line parsed once into its fields (JSON values; SQL NULL when absent or null).
objects AS (
    SELECT unnest(json_transform(json, '{
               "message_id": "JSON", "type": "JSON", "order_id": "JSON", "buyer_id": "JSON",
               "sent_at": "JSON", "at": "JSON", "marketplace": "JSON", "initiated_by": "JSON",
               "reply_to": "JSON", "channel": "JSON", "subject": "JSON", "body": "JSON",
               "category": "JSON", "buyer_opted_out": "JSON", "delivered_at": "JSON",
               "order_placed_at": "JSON", "language": "JSON", "buyer_language": "JSON",
               "attachments": "JSON", "handmade": "JSON"}')),
           json_exists(json, '$.message_id') AS has_message_id
    FROM read_ndjson_objects({log}, ignore_errors = true)
    WHERE json IS NOT NULL
      AND NOT regexp_matches(right(json, 8), ',\s*\}\s*$')   -- a trailing comma is not JSON
),

-- A line is a buyer event when it has a "type" and no "message_id".
events AS (
    SELECT buyer_id->>'$' AS buyer_id, type->>'$' = 'buyer_opt_out' AS opted_out,
           CASE WHEN json_type("at") = 'VARCHAR' AND regexp_matches("at"->>'$',
                    '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)$')
                THEN try_cast(upper("at"->>'$') AS TIMESTAMPTZ) END AS at
    FROM objects
    WHERE type IS NOT NULL AND NOT has_message_id
      AND type->>'$' IN ('buyer_opt_out', 'buyer_opt_in')
      AND json_type(buyer_id) = 'VARCHAR' AND length(buyer_id->>'$') > 0
),

raw_messages AS (
    SELECT
        message_id->>'$' AS message_id, buyer_id->>'$' AS buyer_id,
        coalesce(marketplace->>'$', 'US') AS mk,
        coalesce(initiated_by->>'$', 'seller') AS initiated_by,
        coalesce(channel->>'$', 'email') AS channel,
        category->>'$' AS category,
        coalesce(subject->>'$', '') AS subject, coalesce(body->>'$', '') AS body,
        reply_to->>'$' AS reply_to,
        CASE WHEN json_type(sent_at) = 'VARCHAR' AND regexp_matches(sent_at->>'$',
                  '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)$')
                  THEN try_cast(upper(sent_at->>'$') AS TIMESTAMPTZ)
             WHEN regexp_matches(sent_at->>'$', '^\d{1,10}(\.\d+)?$')   -- Unix seconds (JSON number or text)
                  THEN to_timestamp(CAST(sent_at->>'$' AS DOUBLE)) END AS sent_at,
        CASE json_type(buyer_opted_out)                             -- pydantic's lax booleans
            WHEN 'BOOLEAN' THEN CAST(buyer_opted_out->>'$' AS BOOLEAN)
            WHEN 'VARCHAR' THEN CASE WHEN lower(buyer_opted_out->>'$') IN ('1', 'on', 't', 'true', 'y', 'yes') THEN true
                                     WHEN lower(buyer_opted_out->>'$') IN ('0', 'off', 'f', 'false', 'n', 'no') THEN false END
            WHEN 'UBIGINT' THEN CASE buyer_opted_out->>'$' WHEN '1' THEN true WHEN '0' THEN false END
        END AS record_opted_out,
        buyer_opted_out IS NULL AS opted_out_absent,
        -- every other check the engine's record model makes
        json_type(message_id) = 'VARCHAR' AND length(message_id->>'$') > 0
        AND json_type(order_id) = 'VARCHAR' AND length(order_id->>'$') > 0
        AND json_type(buyer_id) = 'VARCHAR' AND length(buyer_id->>'$') > 0
        AND list_bool_and([coalesce(json_type(f), 'VARCHAR') = 'VARCHAR'
                           FOR f IN [marketplace, initiated_by, channel, subject, body, category,
                                     reply_to, language, buyer_language]])
        AND coalesce(json_type(handmade), 'BOOLEAN') = 'BOOLEAN'
        AND list_bool_and([f IS NULL OR (json_type(f) = 'VARCHAR' AND regexp_matches(f->>'$',
                               '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)$'))
                           FOR f IN [delivered_at, order_placed_at]])
        AND (attachments IS NULL
             OR (json_type(attachments) = 'ARRAY'
                 AND coalesce(list_bool_and([json_type(a, 'name') = 'VARCHAR' AND a->>'kind' IN
                         ('invoice', 'product_instructions', 'warranty', 'image', 'other')
                     FOR a IN CAST(attachments AS JSON[])]), true))) AS well_typed
    FROM objects
    WHERE has_message_id OR type IS NULL
),

messages AS (
    SELECT m.*, timezone(z.tz, m.sent_at)::DATE AS local_day,
           m.category IN ('product_customization', 'delivery_scheduling', 'shipping_address_issue',
                          'custom_design_verification', 'home_service_appointment', 'order_info_request') AS critical
    FROM raw_messages m JOIN zones z ON z.mk = m.mk
    WHERE m.well_typed AND m.sent_at IS NOT NULL
      AND m.initiated_by IN ('seller', 'buyer')
      AND m.channel IN ('email', 'seller_central', 'request_a_review', 'api')
      AND (m.opted_out_absent OR m.record_opted_out IS NOT NULL)
      AND (m.category IS NULL OR m.category IN (
          'product_customization', 'delivery_scheduling', 'shipping_address_issue', 'order_info_request',
          'fulfillment_issue', 'return_question', 'invoice', 'custom_design_verification',
          'home_service_appointment', 'review_request', 'feedback_request', 'order_confirmation',
          'shipment_confirmation', 'delivery_confirmation', 'proactive_customer_service',
          'out_of_stock_notice', 'marketing', 'cross_sell', 'thank_you_only', 'customer_service_reply'))
),

-- The buyer's text as the quote check compares it.
buyer_texts AS (
    SELECT message_id, buyer_id,
           lower(trim(regexp_replace(regexp_replace(body, '(?m)^[ \t]*(?:>[ \t]?)+', '', 'g'),
                                     '[\s\p{Z}\x{85}]+', ' ', 'g'))) AS text
    FROM messages WHERE initiated_by = 'buyer'
),

facts AS (
    SELECT m.message_id, m.initiated_by, m.channel, v.version, v.important_honoured, m.critical,
           coalesce(m.record_opted_out, e.opted_out) AS opted_out,
           regexp_matches(m.subject, '\badditional\s+information\s+required\b', 'i') AS subject_air,
           regexp_matches(m.subject, '\[\s*important\s*\]', 'i') AS subject_important_tag,
           CASE WHEN m.reply_to IS NULL THEN false
                WHEN b.message_id IS NULL THEN NULL                 -- not in the log: unknown
                WHEN b.buyer_id <> m.buyer_id THEN false            -- another buyer's thread
                ELSE contains(lower(trim(regexp_replace(regexp_replace(m.body, '(?m)^[ \t]*(?:>[ \t]?)+', '', 'g'),
                                                        '[\s\p{Z}\x{85}]+', ' ', 'g'))), b.text)
           END AS quoted_reply
    FROM messages m
    ASOF LEFT JOIN events e ON e.buyer_id = m.buyer_id AND m.sent_at > e.at
    LEFT JOIN versions v ON (v.mk = m.mk OR v.mk = '*') AND m.local_day >= v.valid_from AND m.local_day < v.valid_to
    LEFT JOIN buyer_texts b ON b.message_id = m.reply_to
),

-- One row per value of each unknown fact; the D1-D9 table on each.
decided AS (
    SELECT message_id,
        CASE WHEN version IS NULL THEN 'no_policy'
             WHEN version = 'suspension' OR initiated_by = 'buyer' OR NOT o THEN 'allowed'       -- S1, D1
             WHEN (subject_air AND channel = 'seller_central'
                   OR important_honoured AND subject_important_tag AND channel IN ('email', 'api'))
                  THEN CASE WHEN c THEN 'allowed' ELSE 'violation' END                            -- D3, D7 / D4, D8
             WHEN q THEN 'allowed'                                                                -- D5
             ELSE 'blocked' END AS outcome                                                        -- D2, D6, D9
    FROM facts,
         unnest(CASE WHEN opted_out IS NULL THEN [true, false] ELSE [opted_out] END) AS t1(o),
         unnest(CASE WHEN quoted_reply IS NULL THEN [true, false] ELSE [quoted_reply] END) AS t2(q),
         unnest(CASE WHEN critical IS NULL THEN [true, false] ELSE [critical] END) AS t3(c)
)
SELECT message_id, CASE WHEN min(outcome) = max(outcome) THEN min(outcome) ELSE 'indeterminate' END AS outcome
FROM decided GROUP BY message_id
"""


def sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # DuckDB plans an as-of join against a small right side (the buyer events) as a
    # nested loop; the sort-merge plan is about twice as fast on the whole query.
    try:
        con.execute("SET asof_loop_join_threshold = 0")
    except duckdb.Error:  # an older DuckDB without the setting
        pass
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def run(log: Path, out: Path, threads: int | None = None) -> tuple[int, float]:
    """Write (message_id, outcome) for every judged message of LOG to OUT (Parquet): (rows, seconds)."""
    start = time.perf_counter()
    con = connect(threads)
    query = QUERY.replace("{log}", sql_string(log))
    rows = con.execute(f"COPY ({query}) TO {sql_string(out)} (FORMAT parquet)").fetchone()[0]
    con.close()
    return rows, time.perf_counter() - start


def _results_relation(results: Path) -> str:
    """msgpolicy's results with `policies` typed as in its Parquet results (a list of structs)."""
    if results.suffix.lower() == ".parquet":
        return f"read_parquet({sql_string(results)})"
    return (f"read_json({sql_string(results)}, format = 'newline_delimited', "
            "columns = {message_id: 'VARCHAR', outcome: 'VARCHAR', "
            "policies: 'STRUCT(policy VARCHAR, version VARCHAR)[]'})")


def compare(log: Path, ours: Path, results: Path, show: int = 5) -> dict:
    """Agreement between the query's outcomes (OURS, Parquet) and msgpolicy's results, over the
    messages decided by the 2017 rules alone and carrying their own category."""
    con = connect()
    con.execute(f"""
        CREATE TEMP TABLE engine AS
        SELECT message_id, outcome,
               list_contains([p.policy FOR p IN policies], '2020-contact-guidelines') AS has_2020
        FROM {_results_relation(results)}""")
    con.execute(f"""
        CREATE TEMP TABLE uncategorised AS
        SELECT json->>'message_id' AS message_id FROM read_ndjson_objects({sql_string(log)}, ignore_errors = true)
        WHERE json IS NOT NULL AND json_type(json) = 'OBJECT' AND json_exists(json, '$.message_id')
          AND coalesce(json_type(json, 'category'), 'NULL') = 'NULL'""")
    con.execute(f"CREATE TEMP TABLE ours AS SELECT * FROM read_parquet({sql_string(ours)})")
    counts = dict(con.execute("""
        SELECT 'engine_results', count(*) FROM engine
        UNION ALL SELECT 'query_rows', count(*) FROM ours
        UNION ALL SELECT 'under_2020_guidelines', count(*) FROM engine WHERE has_2020
        UNION ALL SELECT 'no_category_in_record', count(*) FROM engine e SEMI JOIN uncategorised u USING (message_id)
                      WHERE NOT e.has_2020
        UNION ALL SELECT 'only_in_engine', count(*) FROM engine e ANTI JOIN ours o USING (message_id)
        UNION ALL SELECT 'only_in_query', count(*) FROM ours o ANTI JOIN engine e USING (message_id)
    """).fetchall())
    con.execute("""
        CREATE TEMP TABLE compared AS
        SELECT e.message_id, e.outcome AS engine, o.outcome AS query
        FROM engine e JOIN ours o USING (message_id) ANTI JOIN uncategorised u USING (message_id)
        WHERE NOT e.has_2020""")
    counts["compared"], counts["agree"] = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE engine = query) FROM compared").fetchone()
    counts["disagree"] = counts["compared"] - counts["agree"]
    by_outcome = dict(con.execute(
        "SELECT engine, count(*) FROM compared GROUP BY engine ORDER BY engine").fetchall())
    confusion = con.execute("""
        SELECT engine, query, count(*) AS n FROM compared WHERE engine <> query
        GROUP BY ALL ORDER BY n DESC""").fetchall()
    examples = con.execute(
        f"SELECT message_id, engine, query FROM compared WHERE engine <> query ORDER BY message_id LIMIT {int(show)}"
    ).fetchall()
    con.close()
    return {"counts": counts, "compared_by_engine_outcome": by_outcome,
            "disagreements": [{"engine": e, "query": q, "messages": n} for e, q, n in confusion],
            "examples": [{"message_id": m, "engine": e, "query": q} for m, e, q in examples]}


def print_comparison(report: dict) -> None:
    c = report["counts"]
    print(f"engine results {c['engine_results']:,}, query rows {c['query_rows']:,} "
          f"(only in engine {c['only_in_engine']:,}, only in query {c['only_in_query']:,})")
    print(f"left out: {c['under_2020_guidelines']:,} under the 2020 guidelines, "
          f"{c['no_category_in_record']:,} more without a category in the record")
    print(f"compared {c['compared']:,}: agree {c['agree']:,}, disagree {c['disagree']:,}")
    print("  by engine outcome: " + ", ".join(f"{k} {v:,}" for k, v in report["compared_by_engine_outcome"].items()))
    for d in report["disagreements"]:
        print(f"  engine {d['engine']} / query {d['query']}: {d['messages']:,}")
    for e in report["examples"]:
        print(f"  e.g. {e['message_id']}: engine {e['engine']}, query {e['query']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="JSON Lines log")
    ap.add_argument("--out", type=Path, required=True, help="Parquet file for (message_id, outcome)")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: DuckDB's, the CPU count)")
    ap.add_argument("--compare", type=Path, metavar="RESULTS",
                    help="msgpolicy audit results (.jsonl or .parquet) to compare with")
    ap.add_argument("--show", type=int, default=5, help="disagreements to list (default 5)")
    args = ap.parse_args(argv)
    rows, seconds = run(args.log, args.out, args.threads)
    print(f"{rows:,} rows in {seconds:.2f} s -> {args.out}")
    if args.compare:
        report = compare(args.log, args.out, args.compare, args.show)
        print_comparison(report)
        return 0 if report["counts"]["disagree"] == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
