"""What the tables' rows share: id columns built from index arrays, and the finiteness check."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from contract.errors import VerificationError

from .bundle import Bundle
from .writer import arrow_array


def check_finite(model: str, bundle: Bundle, output: str, values: np.ndarray,
                 users: np.ndarray, items: np.ndarray) -> None:
    """VerificationError naming the first pair whose ``values`` entry is NaN or infinite;
    ``users`` and ``items`` index ``values`` (broadcast against it, as for a [B, n_items] chunk)."""
    bad = ~np.isfinite(values)
    if bad.any():
        where = np.argwhere(bad)[0]
        user, item = np.broadcast_arrays(users, items)
        user, item = user[tuple(where)], item[tuple(where)]
        raise VerificationError(f"model '{model}' produced a non-finite {output} for user_id "
                                f"{bundle.user_ids[user]}, item_id {bundle.item_ids[item]}")


def ids(values: np.ndarray, array: pa.Array, index: np.ndarray) -> pa.Array:
    """The ids at ``index`` as an Arrow column: integers straight from numpy (the common case,
    and several times faster than a take), text through Arrow's take."""
    if values.dtype.kind in "iu":
        return arrow_array(values[index])
    return array.take(arrow_array(index.astype(np.int32)))


def repeated_ids(values: np.ndarray, array: pa.Array, start: int, stop: int, times: int) -> pa.Array:
    """Each id of ``[start, stop)`` repeated ``times`` times (the predictions' user column)."""
    if values.dtype.kind in "iu":
        return arrow_array(np.repeat(values[start:stop], times))
    return ids(values, array, np.repeat(np.arange(start, stop), times))


def tiled_ids(values: np.ndarray, array: pa.Array, times: int) -> pa.Array:
    """Every id, ``times`` times over (the predictions' item column)."""
    if values.dtype.kind in "iu":
        return arrow_array(np.tile(values, times))
    return ids(values, array, np.tile(np.arange(len(values)), times))
