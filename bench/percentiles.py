"""The percentile every bench prints its p95 with."""


def percentile(values, share):
    """The value ``share`` (0-1) of the way through ``values`` sorted, by nearest rank (with 20
    timings, p95 is the 19th); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
