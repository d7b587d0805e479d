"""Reads a topic's Parquet archive the way a user would, with pyarrow and with DuckDB, and
prints what each one read as JSON, for tests/tests/archive.rs to compare with what
`strata consume` returns.

Usage: read_archive.py TOPIC_DIR      (the archive/topic=<t>/ folder)

Prints one JSON object:
  {"pyarrow": [row, ...], "duckdb": [row, ...], "files": [file, ...]}
  row  = [partition, offset, timestamp_ms, key (base64) or null, value (base64) or null,
          [[header key, header value (base64)], ...] in order], sorted by (partition, offset)
  file = what the file's Parquet metadata says: its name, rows, row groups, codecs,
         min/max offset and timestamp from the row-group statistics, sorting columns
"""

import base64
import json
import pathlib
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def b64(value):
    return None if value is None else base64.b64encode(value).decode()


def row(partition, offset, timestamp_ms, key, value, headers):
    return [
        partition,
        offset,
        timestamp_ms,
        b64(key),
        b64(value),
        [[h["key"], b64(h["value"])] for h in headers],
    ]


def read_with_pyarrow(root):
    # The folders are Hive-style (partition=<p>), but the files carry a `partition` column
    # too: read the files' own columns.
    table = ds.dataset(root, format="parquet").to_table()
    timestamps = table.column("timestamp").cast(pa.int64()).to_pylist()
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    rows = [
        row(p, o, t, k, v, h)
        for p, o, t, k, v, h in zip(
            columns["partition"],
            columns["offset"],
            timestamps,
            columns["key"],
            columns["value"],
            columns["headers"],
        )
    ]
    return sorted(rows, key=lambda r: (r[0], r[1]))


def read_with_duckdb(root):
    query = f"""
        SELECT partition, "offset", epoch_ms("timestamp"), key, value, headers
        FROM read_parquet('{root}/*/*.parquet')
        ORDER BY partition, "offset"
    """
    return [row(*r) for r in duckdb.connect().sql(query).fetchall()]


def describe_files(root):
    files = []
    for path in sorted(root.glob("partition=*/*.parquet")):
        meta = pq.ParquetFile(path).metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        column = lambda g, name: g.column(names.index(name))
        stats = lambda name: [column(g, name).statistics for g in groups]
        files.append(
            {
                "name": f"{path.parent.name}/{path.name}",
                "rows": meta.num_rows,
                "row_groups": meta.num_row_groups,
                "codecs": sorted({g.column(i).compression for g in groups for i in range(meta.num_columns)}),
                "offset_min": min(s.min for s in stats("offset")),
                "offset_max": max(s.max for s in stats("offset")),
                "timestamp_stats": all(s is not None and s.has_min_max for s in stats("timestamp")),
                "sorting_columns": sorted({names[c.column_index] for g in groups for c in (g.sorting_columns or ())}),
            }
        )
    return files


def main():
    root = pathlib.Path(sys.argv[1])
    print(
        json.dumps(
            {
                "pyarrow": read_with_pyarrow(root),
                "duckdb": read_with_duckdb(root),
                "files": describe_files(root),
            }
        )
    )


if __name__ == "__main__":
    main()
