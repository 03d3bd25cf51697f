"""The keyed merge of an upsert load: new rows replace the table's rows with the same primary key."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from core.settings import Settings
from ingestion.writer import DataFileWriter, project


def merged_files(current: Table, new_parts: list[pa.Table], key: list[str], settings: Settings) -> list[DataFile]:
    """Upsert for keyed (dimension) tables: new rows replace old rows with the same key.

    The whole merged table is rewritten in one snapshot. That is the right trade
    for dimension tables of thousands of rows; a large keyed table would want
    merge-on-read deletes instead.
    """
    schema = current.schema().as_arrow()
    new = pa.concat_tables([project(t, schema) for t in new_parts]) if new_parts else schema.empty_table()
    # Within one load the last row for a key wins.
    new = new.append_column("__pos", pa.array(range(len(new)), type=pa.int64()))
    last = new.group_by(key).aggregate([("__pos", "max")]).column("__pos_max")
    new = new.take(pc.sort_indices(last)).drop_columns(["__pos"])
    old = current.scan().to_arrow() if current.current_snapshot() else schema.empty_table()
    old = project(old, schema)
    if len(old):
        kept = old.join(new.select(key), keys=key, join_type="left anti")
        merged = pa.concat_tables([project(kept, schema), new])
    else:
        merged = new
    writer = DataFileWriter(current, settings.target_file_rows)
    writer.add(merged)
    writer.flush()
    return writer.files
