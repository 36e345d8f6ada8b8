"""Learning curves as inline SVG, drawn on the server: no chart library, nothing from a CDN.

The geometry (polyline points, ticks on round numbers, axes) is computed here; templates/models/
_chart.html only writes it out.
"""

import math

CHART = {"width": 460, "height": 250, "left": 48, "right": 12, "top": 14, "bottom": 36}


def finite(value):
    return isinstance(value, int | float) and math.isfinite(value)


def _nice_step(span, target_ticks=5):
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def learning_curve_chart(history, metric, title):
    """Training and validation `metric` per epoch as polylines in a fixed-size SVG viewBox."""
    rows = [row for row in history or [] if finite(row.get("epoch"))]
    series_keys = [(metric, "training", "train"), (f"val_{metric}", "validation", "val")]
    values = [row[key] for row in rows for key, _, _ in series_keys if finite(row.get(key))]
    if not values:
        return None
    c = CHART
    plot_w = c["width"] - c["left"] - c["right"]
    plot_h = c["height"] - c["top"] - c["bottom"]
    if metric == "accuracy":
        low, high = min(0.5, math.floor(min(values) * 10) / 10), 1.0
    else:
        low, high = 0.0, max(values) * 1.05 or 1.0
    step = _nice_step(high - low)
    high = max(high, low + step)
    last_epoch = max(row["epoch"] for row in rows)

    def x_of(epoch):
        if last_epoch <= 1:
            return c["left"] + plot_w / 2
        return c["left"] + (epoch - 1) / (last_epoch - 1) * plot_w

    def y_of(value):
        return c["top"] + (1 - (value - low) / (high - low)) * plot_h

    series = []
    for key, label, css in series_keys:
        points = [(x_of(row["epoch"]), y_of(row[key])) for row in rows if finite(row.get(key))]
        if points:
            series.append(
                {
                    "label": label,
                    "css": css,
                    "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                    "dots": [{"x": round(x, 1), "y": round(y, 1)} for x, y in points],
                    "last": rows[-1].get(key),
                }
            )
    # The figures the lines are drawn from, epoch by epoch: what a screen reader, or anyone who
    # cannot tell a point's height on the drawing, reads instead (templates/models/_chart.html).
    shown = [(key, label) for key, label, _ in series_keys if any(finite(row.get(key)) for row in rows)]
    table = {
        "columns": [label for _, label in shown],
        "rows": [
            {"epoch": row["epoch"], "values": [row.get(key) if finite(row.get(key)) else None
                                               for key, _ in shown]}
            for row in rows
        ],
    }
    y_ticks = []
    tick = math.ceil(low / step - 1e-9) * step  # ticks on round numbers, not on the data's minimum
    while tick <= high + 1e-9:
        y_ticks.append({"y": round(y_of(tick), 1), "label": f"{tick:.2f}".rstrip("0").rstrip(".") or "0"})
        tick += step
    x_every = max(1, math.ceil(last_epoch / 10))
    x_ticks = [
        {"x": round(x_of(epoch), 1), "label": epoch}
        for epoch in range(1, int(last_epoch) + 1)
        if epoch == 1 or epoch % x_every == 0
    ]
    return {
        "title": title,
        "metric": metric,
        "width": c["width"],
        "height": c["height"],
        "left": c["left"],
        "right": c["width"] - c["right"],
        "top": c["top"],
        "bottom": c["height"] - c["bottom"],
        "x_label_y": c["height"] - 4,
        "series": series,
        "table": table,
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
    }


def learning_curves(version):
    history = version.history or (version.progress or {}).get("history") or []
    charts = [learning_curve_chart(history, "loss", "Loss"),
              learning_curve_chart(history, "accuracy", "Accuracy")]
    return [chart for chart in charts if chart]
