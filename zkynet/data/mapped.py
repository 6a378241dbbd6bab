"""A `.npy` file read row by row, never whole: a dataset larger than memory.

`MappedArray(path)` looks like the array stored in the file (`shape`, `dtype`,
`len`, indexing) but holds only its header: indexing it reads the rows asked for
with positional reads (`os.preadv`) into a fresh array. Unlike `np.load(...,
mmap_mode="r")`, whose pages stay mapped into the process once touched (a pass
over a 6 GB file leaves 6 GB resident), what it reads is the caller's to keep or
drop, so a training loop's resident memory stays at a few batches; the kernel's
page cache still makes the second epoch fast. Casting (`astype`), reshaping the
rows (`reshape`) and taking a subset of rows (`subset`) are lazy: they apply to
each read.
"""

import os
from pathlib import Path

import numpy as np

from zkynet.data.downloaded import DatasetFileError

CHUNK_BYTES = 64 << 20  # what `chunks` reads at a time
IOV_MAX = 1024  # buffers per positional read (Linux's limit)


class MappedFileError(DatasetFileError):
    """A .npy file that cannot be read as an array of numbers; the message names it."""


class MappedArray:
    def __init__(self, path, dtype=None, row_shape=None, rows=None):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    file_shape, fortran, stored = np.lib.format.read_array_header_1_0(f)
                else:
                    file_shape, fortran, stored = np.lib.format.read_array_header_2_0(f)
                self.offset = f.tell()
        except FileNotFoundError:
            raise
        except Exception as e:
            raise MappedFileError(f"cannot read {self.path} as a .npy array ({type(e).__name__}: {e})") from None
        if fortran or stored.hasobject or not file_shape or stored.kind not in "biuf":
            what = "Fortran-ordered" if fortran else f"of dtype {stored}" if file_shape else "a scalar"
            raise MappedFileError(
                f"{self.path} holds an array {what}: a dataset file holds a C-ordered array of numbers, one row "
                "per example (np.save(path, np.ascontiguousarray(array)))"
            )
        self.stored = stored
        self.file_rows, self.file_row_shape = file_shape[0], tuple(file_shape[1:])
        self.row_bytes = int(np.prod(self.file_row_shape, dtype=np.int64)) * stored.itemsize
        expected = self.offset + self.file_rows * self.row_bytes
        size = self.path.stat().st_size
        if size < expected:
            raise MappedFileError(
                f"{self.path} is cut short: its header says {self.file_rows} rows of {self.file_row_shape} "
                f"{stored} ({expected} bytes), the file has {size} bytes; write it again"
            )
        self.dtype = np.dtype(dtype) if dtype is not None else stored
        self.row_shape = tuple(row_shape) if row_shape is not None else self.file_row_shape
        if int(np.prod(self.row_shape, dtype=np.int64)) != int(np.prod(self.file_row_shape, dtype=np.int64)):
            raise ValueError(f"{self.path}: rows shaped {self.file_row_shape} cannot be reshaped to {self.row_shape}")
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: int | None = None

    # --- what makes it look like an array
    def __len__(self):
        return self.file_rows if self.rows is None else len(self.rows)

    @property
    def shape(self):
        return (len(self), *self.row_shape)

    @property
    def ndim(self):
        return 1 + len(self.row_shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __repr__(self):
        return f"MappedArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def astype(self, dtype, copy=True):
        return MappedArray(self.path, dtype, self.row_shape, self.rows)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        rows, *row_shape = shape
        if rows not in (-1, len(self)):
            raise ValueError(f"a MappedArray keeps its {len(self)} rows; cannot reshape to {shape}")
        if -1 in row_shape:
            known = int(np.prod([s for s in row_shape if s != -1], dtype=np.int64))
            row_shape[row_shape.index(-1)] = int(np.prod(self.row_shape, dtype=np.int64)) // max(known, 1)
        return MappedArray(self.path, self.dtype, row_shape, self.rows)

    def subset(self, rows):
        """The rows `rows` (of this array) as an array of their own, read lazily too."""
        rows = np.asarray(rows, dtype=np.int64)
        return MappedArray(self.path, self.dtype, self.row_shape, rows if self.rows is None else self.rows[rows])

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._read(np.array([_row(int(key), len(self))]))[0]
        elif isinstance(key, slice):
            out = self._read(np.arange(*key.indices(len(self))))
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                index = np.nonzero(index)[0]
            out = self._read(np.where(index < 0, index + len(self), index).astype(np.int64))
        if not rest:
            return out
        return out[rest] if isinstance(key, (int, np.integer)) else out[(slice(None),) + tuple(rest)]

    def chunks(self):
        """(start, rows start:start+n as an array) over the whole array, CHUNK_BYTES at a time."""
        step = max(1, CHUNK_BYTES // max(self.row_bytes, 1))
        for start in range(0, len(self), step):
            yield start, self[start : start + step]

    # --- reading
    def _read(self, index):
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {self!r}")
        rows = index if self.rows is None else self.rows[index]
        out = np.empty((len(rows), *self.file_row_shape), self.stored)
        if len(rows):
            self._read_rows(rows, out)
        out = out.reshape((len(rows), *self.row_shape))
        return out if out.dtype == self.dtype else out.astype(self.dtype)

    def _read_rows(self, rows, out):
        """File rows `rows` into `out`, one positional read per run of consecutive rows."""
        fd = self._file()
        flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), self.row_bytes)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = np.nonzero(np.diff(ordered) != 1)[0] + 1
        for run in np.split(np.arange(len(rows)), breaks):
            targets = order[run]
            if len(targets) == 1 or (np.diff(targets) == 1).all():  # in order: one buffer
                groups = [[memoryview(flat[targets[0] : targets[-1] + 1]).cast("B")]]
            else:  # scattered over `out`: a buffer per row, at most IOV_MAX per read
                views = [memoryview(flat[i]) for i in targets]
                groups = [views[i : i + IOV_MAX] for i in range(0, len(views), IOV_MAX)]
            position = self.offset + int(ordered[run[0]]) * self.row_bytes
            for buffers in groups:
                position = self._read_into(fd, buffers, position)

    def _read_into(self, fd, buffers, position):
        """Fill `buffers` from `position` on; a read may return less than asked (Linux
        reads at most about 2 GB at once): go on where it stopped. Returns the position
        after them."""
        done = os.preadv(fd, buffers, position)
        wanted = sum(b.nbytes for b in buffers)
        while done < wanted:
            if done == 0 and wanted:
                raise MappedFileError(f"{self.path} was cut short while reading it; write it again")
            position, wanted = position + done, wanted - done
            buffers = _after(buffers, done)
            done = os.preadv(fd, buffers, position)
        return position + done

    def _file(self):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getstate__(self):  # picklable (a copy opens its own file)
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def _after(buffers, count):
    """`buffers` without their first `count` bytes."""
    rest = []
    for buffer in buffers:
        if count >= buffer.nbytes:
            count -= buffer.nbytes
            continue
        rest.append(buffer[count:] if count else buffer)
        count = 0
    return rest


def _row(i, count):
    if not -count <= i < count:
        raise IndexError(f"row {i} out of range for {count} rows")
    return i % count
