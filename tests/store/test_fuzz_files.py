"""Fuzzing the files ibdb reads, and `ibdb sql`'s seal (issue 13 "Hardening"): whatever a file
holds, the CLI answers with exit 0 or 2 (one paragraph saying what to fix), never 1 (a bug) or a
traceback; it prints under 10 KB, finishes within a time limit, and a failed command leaves the
store's rows as they were; refused SQL creates no file.

Five classes, each starting from valid artefacts built once per module (a small gp run on an npz
task: run A stored and estimated, run B's shard folder not yet ingested):

1. npz task files (array names, dtypes, shapes and values changed; the file's bytes truncated,
   flipped, overwritten or extended): `ibdb validate`, and `ibdb run` where it validates.
2. shard files of run B (bytes damaged with or without renaming to the new checksum; rows,
   columns, types and the ``ibdb`` footer metadata rewritten; files removed, renamed, added,
   replaced by folders or links): `ibdb ingest` into the store holding run A, then `ibdb
   estimate` of run B where the ingest succeeds.
3. run B's run.json (its JSON tree mutated as tests/spec/test_fuzz_specs.py mutates specs; its bytes
   damaged): `ibdb ingest`.
4. the store file (truncated, bits flipped, byte ranges overwritten, junk appended, a junk WAL
   beside it): `ibdb sql` (a count and the run_summary view), `ibdb estimate`, `ibdb check`.
5. SQL that read-only `ibdb sql` must refuse (COPY TO, EXPORT DATABASE, ATTACH, PRAGMA
   profiling_output, SET log_query_path and other settings, INSTALL / LOAD, enable_external_access,
   reading files, writes without --write, several statements) with mutated paths, options,
   casing, comments and whitespace, with and without --write: exit 2, nothing written.

The cases are derandomized, so CI runs the same ones every time: N_NPZ = 50, N_SHARDS = 60,
N_MANIFEST = 50, N_STORE = 50 and N_SQL = 80, 290 cases in all (about 40 s on 2 cores with the
regression tests at the end: what the fuzzing found, each fixed).
"""

from __future__ import annotations

import copy
import faulthandler
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from ibdb.api import Ibdb
from ibdb.cli import main

from conftest import make_npz, spec_dict, write_spec

N_NPZ = 50
N_SHARDS = 60
N_MANIFEST = 50
N_STORE = 50
N_SQL = 80
MAX_OUTPUT = 10_000  # bytes
MAX_SECONDS = 10.0  # one command
HANG_SECONDS = 120.0  # a command still running then is a hang: the watchdog ends the process
TABLES = ("specs", "runs", "shards", "losses", "spectra", "estimates", "loss_set_digests",
          "splitting_particles")


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


class Base:
    """The module's valid artefacts: the store ``db`` holding run A (estimated), run B's shard
    folder (not ingested) and the npz task's arrays."""

    def __init__(self, folder: Path, db: Path, run_b: Path, arrays: dict[str, np.ndarray]
                 ) -> None:
        self.folder, self.db, self.run_b, self.arrays = folder, db, run_b, arrays
        self.run_b_id = run_b.name

    def __repr__(self) -> str:  # (hypothesis shows it with every failing case)
        return f"Base({self.folder})"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    folder = tmp_path_factory.mktemp("fuzz_files")
    make_npz(folder / "toy.npz")
    db = folder / "s.duckdb"
    Ibdb(db, shards=folder / "a", device="cpu").run(
        write_spec(folder, spec_dict(n_hypotheses=100), "a.yaml"))
    Ibdb(db, shards=folder / "b", device="cpu").run(
        write_spec(folder, spec_dict(n_hypotheses=100, seed=7), "b.yaml"), ingest=False)
    (run_b,) = (folder / "b").iterdir()
    with np.load(folder / "toy.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    return Base(folder, db, run_b, arrays)


# -- the checks every case makes ----------------------------------------------------------------


def ibdb(db: Path, *args: str, shards: Path | None = None, check: bool = False) -> Any:
    """Run the CLI; assert exit 0 or 2 (``check``: 1 with its "found problems" summary too), no
    traceback, output under MAX_OUTPUT and a run time under MAX_SECONDS."""
    argv = ["--db", str(db), "--device", "cpu", *(["--shards", str(shards)] if shards else []),
            *args]
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(main, argv)
    finally:
        faulthandler.cancel_dump_traceback_later()
    elapsed = time.perf_counter() - start
    out = result.output
    problems_found = check and result.exit_code == 1 and "check(s) found problems" in out \
        and "This is a bug" not in out
    assert result.exit_code in (0, 2) or problems_found, \
        (args, result.exit_code, repr(result.exception), out[:3000])
    assert "Traceback" not in out, out[:3000]
    assert len(out.encode()) < MAX_OUTPUT, (args, len(out.encode()))
    assert elapsed < MAX_SECONDS, (args, elapsed)
    return result


def snapshot(db: Path) -> dict[str, tuple]:
    """Each table's row count and a checksum over its rows, read by a fresh connection."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*), sum(hash(r)::HUGEINT) FROM {t} r").fetchone()
                for t in TABLES}
    finally:
        con.close()


def listing(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size (-1 for folders)."""
    return {str(p.relative_to(folder)): (-1 if p.is_dir() else p.lstat().st_size)
            for p in folder.rglob("*")}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(data: bytes, kind: str, at: int, size: int, byte: int) -> bytes:
    """``data`` truncated, bit-flipped, overwritten or extended (at a fraction ``at`` / 2**16 of
    its length)."""
    b = bytearray(data)
    where = at * len(b) >> 16
    if kind == "truncate":
        return bytes(b[:where])
    if kind == "flip":
        for k in range(1 + size % 8):
            i = (where + k * 977) % max(len(b), 1)
            if b:
                b[i] ^= 1 << ((byte + k) % 8)
        return bytes(b)
    if kind == "overwrite":
        fill = bytes((byte + 31 * k) % 256 for k in range(size)) if byte % 3 else bytes(size)
        b[where:where + size] = fill[:max(len(b) - where, 0)]
        return bytes(b)
    return bytes(b) + bytes((byte * 7 + k) % 256 for k in range(size))  # append


BYTE_DAMAGE = st.tuples(st.sampled_from(["truncate", "flip", "overwrite", "append"]),
                        st.integers(0, 2**16 - 1), st.sampled_from([1, 7, 64, 512, 4096, 70000]),
                        st.integers(0, 255))

WEIRD_NUMBERS = [0, -1, 1, 2, 10**9, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 0.5, -0.0,
                 1e-320, 1e308, -1e308, float("nan"), float("inf"), float("-inf")]
WEIRD_STRINGS = ["", " ", "ñandú", "😀" * 20, "a" * 3000, "\u202e\u0000x", "-1", "1e3", "true",
                 "null", "../../etc/passwd", "{a: b}", "2026-13-45T99:00:00", "0000000000000000",
                 "aa06378491c78b46", "'; DROP TABLE losses; --"]
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from(WEIRD_NUMBERS), st.integers(),
              st.floats(), st.sampled_from(WEIRD_STRINGS), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=8)
TREE_MUTATION = st.tuples(st.sampled_from(["drop", "replace", "add"]), st.integers(0, 10**6),
                          JSON_VALUES, st.text(min_size=1, max_size=12))


def _slots(tree: Any, path: tuple = ()) -> list[tuple]:
    items = tree.items() if isinstance(tree, dict) else \
        enumerate(tree) if isinstance(tree, list) else ()
    out: list[tuple] = []
    for key, child in items:
        out.append((*path, key))
        if len(path) < 6:
            out.extend(_slots(child, (*path, key)))
    return out


def mutate_tree(tree: Any, mutations: list[tuple]) -> Any:
    """``tree`` with keys dropped, values replaced and keys added at the places ``mutations``
    pick (as tests/spec/test_fuzz_specs.py mutates specs)."""
    tree = copy.deepcopy(tree)
    for kind, pick, value, new_key in mutations:
        value = copy.deepcopy(value)
        slots = _slots(tree)
        if not slots:
            return value if kind == "replace" else tree
        where = slots[pick % len(slots)]
        parent = tree
        for key in where[:-1]:
            parent = parent[key]
        if kind == "drop":
            del parent[where[-1]]
        elif kind == "replace":
            parent[where[-1]] = value
        elif isinstance(parent, dict):
            parent[new_key] = value
        else:
            parent.append(value)
    return tree


# -- 1. npz task files --------------------------------------------------------------------------

DTYPES = ["float16", "float32", "int8", "uint8", "int64", "uint64", "bool", "complex128", "U3",
          "datetime64[s]", "object"]
ARRAY_MUTATION = st.tuples(
    st.sampled_from(["drop", "rename", "dtype", "shape", "value", "fill", "extra", "scalar"]),
    st.sampled_from(["X_train", "y_train", "X_test", "y_test"]),
    st.integers(0, 10**6), st.sampled_from(WEIRD_NUMBERS), st.sampled_from(DTYPES))
SHAPES = ["ravel", "row", "empty", "column", "image3", "image4", "five_d", "transpose", "first"]


def reshaped(a: np.ndarray, shape: str, pick: int) -> np.ndarray:
    if a.size == 0:
        return a
    rows = len(a) if a.ndim else 1
    if shape == "ravel":
        return a.ravel()
    if shape in ("row", "empty", "first"):
        return a[: {"row": 1, "empty": 0, "first": 1 + pick % 5}[shape]] if a.ndim else a
    if shape == "transpose":
        return a.T
    if shape == "column":
        return a.reshape(rows, -1)[:, :1]
    extra = {"image3": (1,), "image4": (1, 1), "five_d": (1, 1, 1)}[shape]
    return a.reshape(rows, *extra, -1)


def mutate_arrays(arrays: dict[str, np.ndarray], mutations: list[tuple]
                  ) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    for kind, name, pick, number, dtype in mutations:
        if name not in arrays:
            continue
        a = arrays[name]
        if kind == "drop":
            del arrays[name]
        elif kind == "rename":
            arrays[name.lower() if pick % 2 else name + "_"] = arrays.pop(name)
        elif kind == "dtype":
            try:
                with np.errstate(all="ignore"):
                    arrays[name] = a.astype(object if dtype == "object" else dtype)
            except (ValueError, TypeError):
                pass  # (text that is no number stays text)
        elif kind == "shape":
            arrays[name] = reshaped(a, SHAPES[pick % len(SHAPES)], pick)
        elif kind in ("value", "fill"):
            b = a.astype(np.float64) if isinstance(number, float) or abs(number) >= 2**63 \
                else a.copy()
            flat = b.reshape(-1)
            if flat.size:
                with np.errstate(all="ignore"):
                    target = slice(None) if kind == "fill" else pick % flat.size
                    try:
                        flat[target] = number
                    except OverflowError:
                        flat = flat.astype(np.float64)
                        flat[target] = number
                b = flat.reshape(b.shape)
            arrays[name] = b
        elif kind == "extra":
            arrays[f"extra_{pick % 7}"] = np.full((pick % 4, 2), number)
        else:  # scalar
            arrays[name] = np.asarray(number)
    return arrays


@fuzz(N_NPZ)
@given(mutations=st.lists(ARRAY_MUTATION, max_size=3),
       damaged=st.one_of(st.none(), st.none(), BYTE_DAMAGE), compressed=st.booleans())
def test_mutated_npz_files_validate_and_run_cleanly(base: Base, mutations: list,
                                                    damaged: tuple | None, compressed: bool
                                                    ) -> None:
    # (a folder per example: function-scoped fixtures are not reset between examples)
    with tempfile.TemporaryDirectory(dir=base.folder) as tmp:
        folder = Path(tmp)
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(
            buffer, **mutate_arrays(base.arrays, mutations))
        data = buffer.getvalue()
        (folder / "toy.npz").write_bytes(damage(data, *damaged) if damaged else data)
        spec = write_spec(folder, spec_dict(n_hypotheses=40))
        db = folder / "s.duckdb"
        shutil.copy(base.db, db)
        before = snapshot(db)
        if ibdb(db, "validate", str(spec)).exit_code != 0:
            event("npz: refused by validate")
            return
        result = ibdb(db, "run", str(spec), shards=folder / "shards")
        event(f"npz: valid, run exit {result.exit_code}")
        if result.exit_code != 0:
            assert snapshot(db) == before


def test_the_unmutated_artefacts_are_valid(base: Base, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    shutil.copy(base.db, db)
    assert ibdb(db, "ingest", str(base.run_b)).exit_code == 0
    assert snapshot(db)["losses"][0] == 200
    assert ibdb(db, "check", shards=base.folder / "b").exit_code == 0


# -- 2. shard files -----------------------------------------------------------------------------

LOSS_COLUMNS = ["run_id", "hypothesis_id", "seed", "test_mse", "test_error"]
SPECTRUM_COLUMNS = ["run_id", "component", "eigenvalue", "residuals"]
SQL_VALUES = ["NULL", "'NaN'::DOUBLE", "'inf'::DOUBLE", "-1", "0", "1e308", "9223372036854775807",
              "'aa06378491c78b46'", "''", "'x'", "[1.0, 2.0]", "[]", "true"]
SQL_TYPES = ["INTEGER", "VARCHAR", "DOUBLE", "FLOAT", "BIGINT", "BOOLEAN", "HUGEINT", "DOUBLE[]",
             "UBIGINT", "DECIMAL(4,1)"]
META_TEXTS = ["", "not json", "[1, 2]", "null", "42", '"text"', "{", "{\"run_id\": 1}", "NaN",
              "{}", "{\"first_hypothesis\": \"0\", \"last_hypothesis\": \"63\"}"]
SHARD_MUTATION = st.tuples(
    st.sampled_from(["bytes", "bytes_resealed", "drop_column", "cast_column", "rename_column",
                     "set_value", "shift_ids", "duplicate_row", "drop_row", "reverse", "empty",
                     "extra_column", "meta_tree", "meta_text", "no_meta", "meta_summary",
                     "rename_range",
                     "delete", "stray_parquet", "dot_file", "folder", "broken_link",
                     "empty_file", "copy_of_a", "nested_run"]),
    st.integers(0, 10**6), BYTE_DAMAGE, st.sampled_from(SQL_VALUES),
    st.sampled_from(SQL_TYPES), st.lists(TREE_MUTATION, min_size=1, max_size=2),
    st.sampled_from(META_TEXTS))


def shard_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.is_symlink())


def seal(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` under a shard ``name`` whose checksum part is the data's own."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = name.rsplit("-", 1)[0] if name.startswith(("losses-", "spectrum-", "levels-")) \
        else name.removesuffix(".parquet")
    path = folder / f"{stem}-{digest}.parquet"
    path.write_bytes(data)
    return path


def rewrite(path: Path, select: str, meta: str | None) -> bytes:
    """The shard at ``path`` passed through ``select`` (over ``t``), with ``meta`` as its
    ``ibdb`` metadata (None: none), as Parquet bytes."""
    out = path.with_name(".rewrite.parquet")
    kv = "" if meta is None else ", KV_METADATA {ibdb: '" + meta.replace("'", "''") + "'}"
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM read_parquet('{path}')")
        con.execute(f"COPY ({select}) TO '{out}' (FORMAT parquet{kv})")
    finally:
        con.close()
    data = out.read_bytes()
    out.unlink()
    return data


def footer_meta(path: Path) -> str | None:
    """A shard's ``ibdb`` metadata as text; None when it has none or cannot be read."""
    con = duckdb.connect()
    try:
        row = con.execute("SELECT value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'",
                          [str(path)]).fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    if row is None:
        return None
    return row[0].decode(errors="replace") if isinstance(row[0], bytes) else row[0]


def _as_object(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def mutate_shards(folder: Path, other_run: Path, mutation: tuple) -> None:
    kind, pick, damaged, value, dtype, tree, text = mutation
    files = shard_files(folder)
    if not files:
        return
    path = files[pick % len(files)]
    columns = LOSS_COLUMNS if path.name.startswith("losses") else SPECTRUM_COLUMNS
    key = "hypothesis_id" if path.name.startswith("losses") else "component"
    column = columns[pick % len(columns)]
    meta = footer_meta(path)
    selects = {
        "drop_column": f"SELECT * EXCLUDE ({column}) FROM t",
        "cast_column": f"SELECT * REPLACE (TRY_CAST({column} AS {dtype}) AS {column}) FROM t",
        "rename_column": f"SELECT * EXCLUDE ({column}), {column} AS {column}_x FROM t",
        "set_value": f"SELECT * REPLACE (CASE WHEN {key} = {pick % 64} THEN TRY_CAST({value} AS "
                     f"(SELECT typeof({column}) FROM t LIMIT 1)) ELSE {column} END AS {column}) "
                     "FROM t",
        "shift_ids": f"SELECT * REPLACE ({key} + {[-1, 1, 64, 10**9, -(10**9)][pick % 5]} AS "
                     f"{key}) FROM t",
        "duplicate_row": f"SELECT * FROM t UNION ALL SELECT * FROM t WHERE {key} = "
                         f"(SELECT min({key}) + {pick % 3} FROM t)",
        "drop_row": f"SELECT * FROM t WHERE {key} <> (SELECT min({key}) + {pick % 40} FROM t)",
        "reverse": f"SELECT * FROM t ORDER BY {key} DESC",
        "empty": "SELECT * FROM t WHERE false",
        "extra_column": f"SELECT *, {value} AS extra FROM t",
    }
    if kind == "bytes":
        path.write_bytes(damage(path.read_bytes(), *damaged))
    elif kind == "bytes_resealed":
        data = damage(path.read_bytes(), *damaged)
        path.unlink()
        seal(folder, path.name, data)
    elif kind in selects or kind in ("meta_tree", "meta_text", "no_meta", "meta_summary"):
        if kind == "meta_tree":
            meta = json.dumps(mutate_tree(_as_object(meta), tree))
        elif kind == "meta_summary":  # what the mean_network view reads (network shards)
            summary = {"n_fitted": 64, "test_residual_sum": [0.5, -1.0, 2.0]}
            meta = json.dumps({**_as_object(meta), "summary": mutate_tree(summary, tree)})
        elif kind == "meta_text":
            meta = text
        try:
            data = rewrite(path, selects.get(kind, "SELECT * FROM t"),
                           None if kind == "no_meta" else meta)
        except duckdb.Error:
            return  # (a cast the rewrite itself refuses: nothing to test)
        path.unlink()
        seal(folder, path.name, data)
    elif kind == "rename_range" and path.name.startswith("losses"):
        first = [0, 1, 64, 99, 100, 10**8][pick % 6]
        path.rename(folder / f"losses-{first:09d}-{first + pick % 70:09d}-"
                              f"{path.name.rsplit('-', 1)[1]}")
    elif kind == "delete":
        path.unlink()
    elif kind == "stray_parquet":
        shutil.copy(path, folder / "stray.parquet")
    elif kind == "dot_file":
        (folder / f".{path.name}.tmp-1").write_bytes(b"half a shard")
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "broken_link":
        path.unlink()
        path.symlink_to(folder / "nowhere")
    elif kind == "empty_file":
        seal(folder, path.name, b"")
    elif kind == "copy_of_a":
        theirs = shard_files(other_run)
        shutil.copy(theirs[pick % len(theirs)], folder)
    elif kind == "nested_run":
        (folder / "inner").mkdir(exist_ok=True)
        shutil.copy(folder / "run.json", folder / "inner" / "run.json")


def changed_and_ingested(base: Base, tmp: Path, change: Any) -> tuple[Path, Any, Any]:
    """Copy run B's folder and the store into ``tmp``, ``change(folder)`` and ingest it: (the
    store, its rows before, the CLI's result)."""
    folder = tmp / "b" / base.run_b_id
    shutil.copytree(base.run_b, folder)
    change(folder)
    db = tmp / "s.duckdb"
    shutil.copy(base.db, db)
    before = snapshot(db)
    return db, before, ibdb(db, "ingest", str(tmp / "b"))


def ingest_case(base: Base, tmp: Path, change: Any) -> None:
    """Copy run B's folder and the store, ``change(folder)``, ingest; a failure must leave the
    rows as they were, and a run B ingested must estimate."""
    db, before, result = changed_and_ingested(base, tmp, change)
    event(f"exit {result.exit_code}")
    if result.exit_code != 0:
        assert snapshot(db) == before, result.output[:2000]
        return
    ibdb(db, "estimate", *[a for r in snapshot_runs(db) for a in ("--run", r)],
         *ESTIMATE_METHODS)


ESTIMATE_METHODS = ("--method", "exact", "--method", "empirical", "--method", "bound")  # fast


def snapshot_runs(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY 1").fetchall()]
    finally:
        con.close()


@fuzz(N_SHARDS)
@given(mutations=st.lists(SHARD_MUTATION, min_size=1, max_size=2))
def test_mutated_shards_ingest_cleanly(base: Base, mutations: list[tuple]) -> None:
    def change(folder: Path) -> None:
        for mutation in mutations:
            mutate_shards(folder, base.folder / "a" / next(iter(
                p.name for p in (base.folder / "a").iterdir())), mutation)

    with tempfile.TemporaryDirectory(dir=base.folder) as tmp:
        ingest_case(base, Path(tmp), change)


# -- 3. run.json --------------------------------------------------------------------------------


@fuzz(N_MANIFEST)
@given(mutations=st.lists(TREE_MUTATION, max_size=3), damaged=st.one_of(st.none(), BYTE_DAMAGE),
       form=st.sampled_from(["json", "json", "json", "bom", "latin1", "folder", "link"]))
def test_mutated_run_json_ingests_cleanly(base: Base, mutations: list[tuple],
                                          damaged: tuple | None, form: str) -> None:
    def change(folder: Path) -> None:
        manifest = folder / "run.json"
        tree = mutate_tree(json.loads(manifest.read_text()), mutations)
        data = json.dumps(tree, indent=2, ensure_ascii=form != "latin1").encode(
            "latin-1" if form == "latin1" else "utf-8", errors="replace")
        data = b"\xef\xbb\xbf" + data if form == "bom" else data
        manifest.write_bytes(damage(data, *damaged) if damaged else data)
        if form == "folder":
            manifest.unlink()
            manifest.mkdir()
            (manifest / "run.json").write_bytes(data)
        elif form == "link":
            manifest.rename(folder / "real.json")
            manifest.symlink_to(folder / "real.json")

    with tempfile.TemporaryDirectory(dir=base.folder) as tmp:
        ingest_case(base, Path(tmp), change)


# -- 4. store files -----------------------------------------------------------------------------

STORE_COMMANDS = [("sql", "SELECT count(*), sum(test_mse) FROM losses"),
                  ("sql", "SELECT * FROM run_summary"), ("estimate",), ("check",)]


@fuzz(N_STORE)
@given(damaged=st.lists(BYTE_DAMAGE, min_size=1, max_size=2),
       header=st.booleans(), wal=st.booleans(),
       command=st.sampled_from(STORE_COMMANDS))
def test_damaged_stores_are_named_not_crashed_on(base: Base, damaged: list[tuple],
                                                 header: bool, wal: bool,
                                                 command: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(dir=base.folder) as tmp:
        db = Path(tmp) / "s.duckdb"
        data = base.db.read_bytes()
        for kind, at, size, byte in damaged:
            if header:  # aim at the three headers, where the block pointers are
                at = (at % 12288) * 2**16 // max(len(data), 1)
            data = damage(data, kind, at, size, byte)
        db.write_bytes(data)
        if wal:
            Path(f"{db}.wal").write_bytes(damage(b"WAL" * 300, "flip", at, size, byte))
        before, files = sha(db), listing(Path(tmp))
        try:
            rows = snapshot(db)
        except duckdb.Error:
            rows = None  # (damage a plain read meets)
        result = ibdb(db, *command, shards=base.folder / "a", check=command == ("check",))
        event(f"{command[0]}: exit {result.exit_code}")
        if command[0] != "estimate":  # read-only: not a byte changes, no file appears
            assert sha(db) == before, (command, result.output[:2000])
            assert listing(Path(tmp)) == files
        elif result.exit_code != 0 and rows is not None:  # (a write-mode open rewrites the
            assert snapshot(db) == rows, result.output[:2000]  # views: rows, not bytes)


# -- 5. SQL that read-only `ibdb sql` refuses -------------------------------------------------

REFUSED = [  # (template, refused with --write too)
    ("COPY losses TO {path}", True),
    ("COPY (SELECT * FROM estimates) TO {path} ({options})", True),
    ("EXPORT DATABASE {path}", True),
    ("EXPORT DATABASE {path} ({options})", True),
    ("ATTACH {path} AS other", True),
    ("ATTACH {path} AS other (READ_WRITE)", True),
    ("ATTACH IF NOT EXISTS {path}", True),
    ("PRAGMA profiling_output = {path}", True),
    ("PRAGMA enable_profiling = 'json'", True),
    ("SET profiling_output = {path}", True),
    ("SET log_query_path = {path}", True),
    ("SET GLOBAL log_query_path = {path}", True),
    ("SET temp_directory = {path}", True),
    ("SET secret_directory = {path}", True),
    ("CALL enable_logging(storage = 'file', storage_path = {path})", True),
    ("INSTALL httpfs", True),
    ("FORCE INSTALL json", True),
    ("LOAD {path}", True),
    ("INSTALL {path}", True),
    ("SET enable_external_access = true", True),
    ("RESET enable_external_access", True),
    ("SET lock_configuration = false", True),
    ("RESET lock_configuration", True),
    ("SET allowed_directories = [{path}]", True),
    ("SET threads = 1", True),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", True),
    ("SELECT * FROM read_csv({path})", True),
    ("SELECT * FROM read_text({path})", True),
    ("SELECT * FROM glob({path})", True),
    ("COPY losses FROM {path}", True),
    ("IMPORT DATABASE {path}", True),
    ("INSERT INTO estimates SELECT * FROM estimates", False),
    ("DELETE FROM losses", False),
    ("UPDATE runs SET host = 'x'", False),
    ("DROP TABLE losses", False),
    ("CREATE TABLE t AS SELECT 1", False),
    ("ALTER TABLE runs ADD COLUMN x INTEGER", False),
    ("CREATE MACRO m() AS 1", False),
]
OPTIONS = ["FORMAT csv", "FORMAT parquet", "FORMAT json", "FORMAT 'csv', HEADER true",
           "FORMAT parquet, COMPRESSION zstd", "OVERWRITE_OR_IGNORE", "PARTITION_BY (run_id)",
           "FORMAT csv, DELIMITER '|'", "USE_TMP_FILE false", "APPEND"]
PATHS = ["out.csv", "dump", "sub/dir/x.parquet", "o'q.duckdb", "ñ 😀.json", "./.hidden",
         "../escape.csv", "out.duckdb", "~/.ibdb_fuzz", "x" * 200, "/dev/null", "{tmp}/abs.csv",
         "{tmp}", "file://{tmp}/uri.csv", "memory"]  # (':memory:' attaches no file: allowed)
KEYWORDS = ["COPY", "TO", "EXPORT", "DATABASE", "ATTACH", "PRAGMA", "SET", "INSTALL", "LOAD",
            "FORCE", "RESET", "CALL", "SELECT", "FROM", "INSERT", "INTO", "DELETE", "UPDATE",
            "DROP", "TABLE", "CREATE", "ALTER", "GLOBAL", "IMPORT"]
PREFIXES = ["", "SELECT 1; ", "SELECT count(*) FROM losses;\n", "/* c */ ", "-- note\n",
            "DELETE FROM estimates; ", "BEGIN; "]
SUFFIXES = ["", ";", " ;; ", "; SELECT 1", "\n-- trailing", " /* ; */", ";\n\t"]


def recase(text: str, pattern: int) -> str:
    words = []
    for k, word in enumerate(text.split(" ")):
        if word.upper() in KEYWORDS:
            mode = (pattern >> (k % 16)) & 3
            word = [word.upper(), word.lower(), word.capitalize(),
                    "".join(c.lower() if i % 2 else c for i, c in enumerate(word))][mode]
        words.append(word)
    return " ".join(words)


@fuzz(N_SQL)
@given(template=st.sampled_from(REFUSED), path=st.sampled_from(PATHS),
       options=st.sampled_from(OPTIONS), case=st.integers(0, 2**32 - 1),
       space=st.sampled_from([" ", "  ", "\t", "\n", " /* x */ ", "\r\n"]),
       prefix=st.sampled_from(PREFIXES), suffix=st.sampled_from(SUFFIXES),
       write=st.booleans())
def test_refused_sql_is_refused_and_writes_nothing(base: Base, template: tuple[str, bool],
                                                   path: str, options: str, case: int,
                                                   space: str, prefix: str, suffix: str,
                                                   write: bool) -> None:
    text, with_write = template
    write = write and with_write  # (writes are what --write allows)
    if write and prefix == "BEGIN; ":
        prefix = ""
    with tempfile.TemporaryDirectory(dir=base.folder) as tmp:
        folder = Path(tmp)
        (folder / "work").mkdir()
        db = folder / "s.duckdb"
        shutil.copy(base.db, db)
        literal = "'" + path.replace("{tmp}", str(folder / "work")).replace("'", "''") + "'"
        statement = recase(text.replace("{path}", literal).replace("{options}", options), case)
        query = prefix + statement.replace(" ", space) + suffix
        before, files, digest = snapshot(db), listing(folder), sha(db)
        home = listing(Path.home() / ".duckdb") if (Path.home() / ".duckdb").exists() else {}
        cwd = os.getcwd()
        os.chdir(folder / "work")  # relative paths land in the case's folder
        try:
            result = ibdb(db, "sql", query, *(["--write"] if write else []))
        finally:
            os.chdir(cwd)
        assert result.exit_code == 2, (query, write, result.output[:2000])
        assert listing(folder) == files, (query, sorted(set(listing(folder)) - set(files)))
        assert not (Path.home() / ".ibdb_fuzz").exists()  # (the one path outside the folder)
        assert (listing(Path.home() / ".duckdb") if (Path.home() / ".duckdb").exists()
                else {}) == home
        assert snapshot(db) == before
        assert write or sha(db) == digest  # (opening it to write rewrites its views)


# -- regressions: what the fuzzing found ---------------------------------------------------------


def _ingest_refused(base: Base, tmp: Path, change: Any, *needles: str) -> str:
    db, before, result = changed_and_ingested(base, tmp, change)
    assert result.exit_code == 2, result.output
    for needle in ("nothing was ingested", *needles):
        assert needle.lower() in result.output.lower(), (needle, result.output)
    assert snapshot(db) == before
    return result.output


def _with_metadata(text: str) -> Any:
    def change(folder: Path) -> None:
        path = sorted(folder.glob("losses-*.parquet"))[0]
        data = rewrite(path, "SELECT * FROM t", text)
        path.unlink()
        seal(folder, path.name, data)
    return change


def _with_summary(summary: Any) -> str:
    return json.dumps({"run_id": "x", "first_hypothesis": 0, "last_hypothesis": 63,
                       "summary": summary})


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "its ibdb metadata is not JSON"),
    ("[1, 2]", "its ibdb metadata is a JSON array, not an object"),
    ("42", "is a JSON number, not an object"),
    ('{"first_hypothesis": "0", "last_hypothesis": "63"}',
     "first_hypothesis '0' and last_hypothesis '63', where ibdb writes integers"),
    (_with_summary([1, 2]), "has a summary that is a JSON array"),
    (_with_summary({"n_fitted": "abc", "test_residual_sum": [1.0]}),
     "summary.n_fitted 'abc', not a count"),
    (_with_summary({"n_fitted": 64, "test_residual_sum": "x"}),
     "summary.test_residual_sum 'x', not a list of numbers"),
], ids=["not-json", "array", "number", "ids-as-text", "summary-array", "n-fitted-text",
        "residuals-text"])
def test_shard_metadata_ibdb_cannot_read_is_refused_by_name(base: Base, tmp_path: Path,
                                                            text: str, message: str) -> None:
    """Found by the fuzzing above: footer metadata that is not JSON, not a JSON object, or ids
    as text ended in exit 1 (JSONDecodeError, AttributeError, or a message showing '0..63' for
    both); a network ``summary`` of the wrong type went in, and then every `ibdb estimate` and
    `ibdb sql` over run_summary failed in the mean_network view's casts (exit 1)."""
    out = _ingest_refused(base, tmp_path, _with_metadata(text), message, "losses-000000000")
    assert "re-run the spec" in out


def _edit_manifest(change: Any) -> Any:
    def edit(folder: Path) -> None:
        manifest = json.loads((folder / "run.json").read_text())
        change(manifest)
        (folder / "run.json").write_text(json.dumps(manifest))
    return edit


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["runner_info"].pop("test_mse_spread"),
     "runner_info: Value error, test_mse_of_mean is given without test_mse_spread"),
    (lambda m: m["runner_info"].update(test_mse_of_mean="low"), "runner_info.test_mse_of_mean"),
    (lambda m: m["runner_info"].update(interpolates="yes"), "runner_info.interpolates"),
    (lambda m: m["task"]["statistics"].pop("n"), "task.statistics.n: Field required"),
    (lambda m: m["task"]["statistics"].update(radius="far"), "task.statistics.radius"),
], ids=["spread-missing", "mean-text", "interpolates-text", "statistics-n-missing",
        "radius-text"])
def test_a_run_json_whose_runner_info_or_statistics_ibdb_cannot_read_is_refused(
        base: Base, tmp_path: Path, change: Any, message: str) -> None:
    """Found by the fuzzing above: run.json's runner_info and task.statistics went in unchecked;
    the store reads the first as numbers and a pair (the CLI's run header: exit 1 on a missing
    spread) and the bound method builds ibdb.stats.bound.TaskStatistics from the second (exit 1 on a
    missing or mistyped key)."""
    _ingest_refused(base, tmp_path, _edit_manifest(change), message, "run.json")


def test_the_manifest_model_reads_every_task_statistic_the_bound_method_takes() -> None:
    import dataclasses

    from ibdb.run.shards import _TaskStatistics
    from ibdb.stats.bound import TaskStatistics

    assert set(_TaskStatistics.model_fields) == \
        {f.name for f in dataclasses.fields(TaskStatistics)}


def test_a_statistic_a_later_ibdb_adds_is_kept_and_ignored(base: Base, tmp_path: Path
                                                             ) -> None:
    """run.json may gain keys in a later ibdb: an unknown task statistic loads, and the bound
    method reads the ones it knows (the same bits as without it)."""
    folder = tmp_path / "b" / base.run_b_id
    shutil.copytree(base.run_b, folder)
    _edit_manifest(lambda m: m["task"]["statistics"].update(k=5))(folder)
    db = tmp_path / "s.duckdb"
    shutil.copy(base.db, db)
    assert ibdb(db, "ingest", str(folder)).exit_code == 0
    result = ibdb(db, "estimate", "--run", base.run_b_id, "--method", "bound")
    assert result.exit_code == 0, result.output


def test_the_bound_method_names_statistics_it_cannot_read() -> None:
    from ibdb.core.errors import EstimateError
    from ibdb.stats.estimators import bound_estimates

    good = {"n": 100, "intrinsic_dim": 3.0, "radius": 2.0, "separation": 0.5, "n_classes": 3,
            "output_dim": 3}
    (row,) = bound_estimates({**good, "added_later": 1}, [0.1])
    assert row.bits == bound_estimates(good, [0.1])[0].bits
    with pytest.raises(EstimateError, match="cannot be read .*radius"):
        bound_estimates({k: v for k, v in good.items() if k != "radius"}, [0.1])
    with pytest.raises(EstimateError, match="radius = 'far'"):
        bound_estimates({**good, "radius": "far"}, [0.1])


def test_a_run_json_without_statistics_or_gp_facts_still_loads(base: Base,
                                                               tmp_path: Path) -> None:
    """What a network run (no posterior facts) or a task without statistics writes."""
    folder = tmp_path / "b" / base.run_b_id
    shutil.copytree(base.run_b, folder)
    _edit_manifest(lambda m: (m["task"].update(statistics=None), m["runner_info"].clear()))(
        folder)
    db = tmp_path / "s.duckdb"
    shutil.copy(base.db, db)
    assert ibdb(db, "ingest", str(folder)).exit_code == 0
    assert ibdb(db, "estimate", "--run", base.run_b_id, *ESTIMATE_METHODS).exit_code == 0


def test_damage_that_estimate_meets_in_a_later_read_names_the_store(base: Base,
                                                                   tmp_path: Path) -> None:
    """Found by the fuzzing above: a block that fails its checksum only when `ibdb estimate`
    reads it (after the store opened) was reported as "DuckDB failed on a file", naming no file
    and no fix; it now gets the store's damage message."""
    db = tmp_path / "s.duckdb"
    db.write_bytes(damage(base.db.read_bytes(), "flip", 12444, 1, 0))
    if ibdb(db, "sql", "SELECT count(*) FROM losses").exit_code != 0:
        pytest.skip("the flip lands elsewhere in this DuckDB's layout")
    result = ibdb(db, "estimate")
    assert result.exit_code == 2, result.output
    assert f"{db}: damaged" in result.output and "Restore it from a backup" in result.output


def test_features_whose_distances_overflow_are_refused(tmp_path: Path) -> None:
    """Found by the fuzzing above: one test feature of 1e308 validates, then `ibdb run` ends in
    torch's LinAlgError (exit 1) instead of a message saying to rescale the data."""
    arrays = dict(np.load(make_npz(tmp_path / "toy.npz")))
    arrays["X_test"][0, 0] = 1e308
    np.savez(tmp_path / "toy.npz", **arrays)
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=40))
    for command in ("validate", "run"):
        result = CliRunner().invoke(main, ["--db", str(tmp_path / "s.duckdb"), "--device",
                                           "cpu", command, str(spec)])
        assert result.exit_code == 2, result.output
        assert "X_test holds a value of magnitude 1e+308" in result.output
        assert "Rescale the features" in result.output
    assert not (tmp_path / "s.duckdb").exists()


def test_complex_features_are_refused(tmp_path: Path) -> None:
    """Complex features were cut to their real parts with only a ComplexWarning."""
    arrays = dict(np.load(make_npz(tmp_path / "toy.npz")))
    arrays["X_train"] = arrays["X_train"] + 1j
    np.savez(tmp_path / "toy.npz", **arrays)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "s.duckdb"), "validate",
                                       str(write_spec(tmp_path, spec_dict()))])
    assert result.exit_code == 2, result.output
    assert "X_train is complex (complex128); save real features." in result.output


def test_a_shard_whose_footer_reads_but_whose_data_does_not_is_named(base: Base,
                                                                    tmp_path: Path) -> None:
    """Found by the fuzzing above: a shard damaged near its start and renamed to its new
    checksum passes every footer check, then the insert fails reading a data page
    (TProtocolException: Invalid data), which ended in exit 1; it is now named as unreadable."""
    def change(folder: Path) -> None:
        path = sorted(folder.glob("losses-*.parquet"))[0]
        data = bytearray(path.read_bytes())
        data[90] ^= 1
        path.unlink()
        seal(folder, path.name, bytes(data))

    _ingest_refused(base, tmp_path, change, "unreadable shard", "losses-000000000")


def test_a_compressed_npz_with_a_damaged_stream_is_refused(tmp_path: Path) -> None:
    """Found by the fuzzing above: a savez_compressed file whose deflate stream is damaged makes
    np.load raise zlib.error, which `ibdb validate` reported as a bug (exit 1)."""
    import zlib

    make_npz(tmp_path / "plain.npz")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(np.load(tmp_path / "plain.npz")))
    data = buffer.getvalue()
    for at in range(200, len(data) - 200, 97):  # the first damage that zlib itself meets
        damaged = damage(data, "overwrite", at * 2**16 // len(data), 7, 1)
        try:
            with np.load(io.BytesIO(damaged)) as npz:
                [npz[name] for name in npz.files]
        except zlib.error:
            break
        except Exception:  # noqa: BLE001 (other damage: try further on)
            continue
    (tmp_path / "toy.npz").write_bytes(damaged)
    spec = write_spec(tmp_path, spec_dict())
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "s.duckdb"), "validate",
                                       str(spec)])
    assert result.exit_code == 2, result.output
    assert "not a readable .npz file" in result.output and "np.savez(" in result.output


@pytest.mark.parametrize("edit", [
    "UPDATE runs SET runner_info = '{\"test_mse_of_mean\": \"low\", \"test_mse_spread\": 1}'",
    "UPDATE runs SET runner_info = '{\"test_mse_of_mean\": 0.1, \"interpolates\": \"maybe\"}'",
    "UPDATE shards SET provenance = '{\"summary\": {\"n_fitted\": \"many\", "
    "\"test_residual_sum\": \"x\"}}' WHERE kind = 'losses'",
], ids=["mean-as-text", "interpolates-as-text", "summary-as-text"])
def test_a_store_edited_by_hand_still_estimates_and_summarises(base: Base, tmp_path: Path,
                                                               edit: str) -> None:
    """Ingest refuses such run facts, but `ibdb sql --write` can still write them: the readers
    (the run header, run_summary, mean_network) read them as missing instead of failing every
    later command with a conversion error (exit 1)."""
    db = tmp_path / "s.duckdb"
    shutil.copy(base.db, db)
    assert ibdb(db, "sql", edit, "--write").exit_code == 0
    result = ibdb(db, "estimate", *ESTIMATE_METHODS)
    assert result.exit_code == 0, result.output
    summary = ibdb(db, "sql", "SELECT test_mse_of_mean, interpolates FROM run_summary",
                   "--format", "json")
    assert summary.exit_code == 0, summary.output
    rows = json.loads(summary.output)
    if "mean" in edit and "low" in edit:
        assert rows[0]["test_mse_of_mean"] is None
    if "maybe" in edit:
        assert rows[0]["interpolates"] is None
