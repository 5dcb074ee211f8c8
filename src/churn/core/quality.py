"""Data quality of the table prepare splits: rows with a blank target, rows that repeat an earlier row, test rows
identical to a train row, each side's class shares. Counted on the cleaned values (" 58 " and "58" are the same
age); a row's identity is its features and target, never its id columns, because that is what the model sees
and is scored on."""

from __future__ import annotations


def report(
    rows_raw: int,
    blank_target: int,
    duplicates: int,
    dropped: int,
    rows: dict[str, int],
    positives: dict[str, int],
    test_rows_in_train: int,
    labels: tuple[str, str],
) -> dict:
    """reports/data_quality.json: the counts, the rows of each label as the file spells it (`labels` =
    (negative, positive); the register stage reads them from here), and each side's class shares. `rows` and
    `positives` per side and `test_rows_in_train` are what churn.core.split.Sides counted."""
    used, positive = sum(rows.values()), sum(positives.values())
    shares = {side: round(positives[side] / rows[side], 6) if rows[side] else 0.0 for side in rows}
    return {
        "rows_raw": rows_raw,
        "rows_blank_target": blank_target,
        "rows_duplicate": duplicates,
        "rows_duplicate_dropped": dropped,
        "rows_used": used,
        "test_rows_in_train": test_rows_in_train,
        "rows_test": rows["test"],
        "rows_per_label": {labels[0]: used - positive, labels[1]: positive},
        "class_shares": {side: {labels[0]: round(1 - share, 6), labels[1]: share} for side, share in shares.items()},
    }


def metrics(report: dict, positive_label: object) -> dict[str, float]:
    """The report as prepare's MLflow metrics (prefixed `prepare.` by the stage)."""
    positive = str(positive_label)
    used = report["rows_used"]
    return {
        "rows_raw": report["rows_raw"],
        "rows_train": used - report["rows_test"],
        "rows_test": report["rows_test"],
        "positive_rate": round(report["rows_per_label"][positive] / used, 6) if used else 0.0,
        "rows_blank_target": report["rows_blank_target"],
        "rows_duplicate": report["rows_duplicate"],
        "rows_duplicate_dropped": report["rows_duplicate_dropped"],
        "test_rows_in_train": report["test_rows_in_train"],
        **{f"positive_share_{side}": shares[positive] for side, shares in report["class_shares"].items()},
    }


def labels_of(report: dict, positive_label: object) -> tuple[str, str]:
    """(negative, positive) labels from a report, as the file spells them."""
    positive = str(positive_label)
    negative = next(label for label in report["rows_per_label"] if label != positive)
    return negative, positive


def warnings(report: dict, target: str, share: float, drop_duplicates: bool) -> list[str]:
    """One line per count above `share` of its rows (params prepare.warn_share)."""

    def above(count: int, total: int) -> bool:
        return total > 0 and count / total > share

    def part(count: int, total: int) -> str:
        return f"{count} of {total} rows ({count / total:.1%})"

    lines = []
    raw, blank = report["rows_raw"], report["rows_blank_target"]
    if above(blank, raw):
        lines.append(f"{part(blank, raw)} have a blank {target} and were dropped")
    labelled, duplicates = raw - blank, report["rows_duplicate"]
    if above(duplicates, labelled):
        action = (
            "dropped before the split (prepare.drop_duplicates)"
            if drop_duplicates
            else "kept (set prepare.drop_duplicates: true to drop them)"
        )
        lines.append(f"{part(duplicates, labelled)} repeat an earlier row's features and {target}; {action}")
    test, seen = report["rows_test"], report["test_rows_in_train"]
    if above(seen, test):
        lines.append(
            f"{seen} of {test} test rows ({seen / test:.1%}) are identical to a train row, so test metrics "
            "overstate the model; set prepare.drop_duplicates: true"
        )
    return lines
