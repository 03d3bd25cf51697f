"""The shipped flights CSV, read independently of the lake and the models: what the tests count against."""

from __future__ import annotations

import zipfile

import pyarrow as pa
import pyarrow.csv as pacsv

from ingestion.declarations import load_declarations


def raw_flights() -> pa.Table:
    path = load_declarations()["flights"].input_files()[0]
    with zipfile.ZipFile(path) as archive, archive.open("flights.csv") as handle:
        return pacsv.read_csv(handle, convert_options=pacsv.ConvertOptions(null_values=["NA"]))
