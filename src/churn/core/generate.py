"""Deterministic synthetic customer table with the seed's columns and a believable churn structure.

Rows are made in fixed blocks, each from its own child of the seed, so a sample of N rows is the
first N rows of any larger sample with the same seed, and memory stays flat at millions of rows.

    python -m churn.tools.generate --rows 20000 --seed 42 --out data/raw/customers.csv
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

BLOCK_ROWS = 100_000
COLUMNS = (
    "customer_id",
    "age",
    "tenure",
    "monthly_charges",
    "total_charges",
    "gender",
    "contract_type",
    "payment_method",
    "churn",
)
CONTRACTS = np.array(["Month-to-month", "One year", "Two year"])
CONTRACT_P = np.array([0.55, 0.25, 0.20])
CONTRACT_LOGIT = np.array([1.1, -0.6, -1.6])
PAYMENTS = np.array(["Electronic check", "Mailed check", "Bank transfer", "Credit card"])
PAYMENT_P = np.array([0.34, 0.23, 0.22, 0.21])
PAYMENT_LOGIT = np.array([0.55, 0.0, -0.25, -0.3])
INTERCEPT = -1.2

log = logging.getLogger(__name__)


def generate_block(start: int, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """One block of customers numbered from `start`; churn is a noisy logistic function of the drivers."""
    contract = rng.choice(len(CONTRACTS), size=rows, p=CONTRACT_P)
    payment = rng.choice(len(PAYMENTS), size=rows, p=PAYMENT_P)
    age = rng.integers(18, 86, size=rows)
    # Longer contracts go with longer tenure; about 1.5% are brand new (tenure 0).
    tenure = np.clip(rng.gamma(1.2 + contract * 1.3, 12.0, size=rows), 1, 72).astype(int)
    tenure = np.where(rng.random(rows) < 0.015, 0, tenure)
    monthly = np.round(np.clip(rng.normal(65.0, 28.0, size=rows), 18.25, 120.0), 2)
    drift = rng.normal(1.0, 0.03, size=rows)
    total = np.round(tenure * monthly * drift, 2)
    total = np.where(tenure == 0, np.nan, total)  # not yet billed
    gender = rng.choice(np.array(["Female", "Male"]), size=rows)

    logit = (
        INTERCEPT
        + CONTRACT_LOGIT[contract]
        + PAYMENT_LOGIT[payment]
        - 0.035 * tenure
        + 0.018 * (monthly - 65.0)
        + 0.006 * (age - 45)
        + rng.normal(0.0, 0.8, size=rows)  # what the columns do not explain
    )
    churn = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    ids = np.char.add("C", np.char.zfill(np.arange(start + 1, start + rows + 1).astype(str), 8))
    return pd.DataFrame(
        {
            "customer_id": ids,
            "age": age,
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "gender": gender,
            "contract_type": CONTRACTS[contract],
            "payment_method": PAYMENTS[payment],
            "churn": churn,
        },
        columns=list(COLUMNS),
    )


def iter_blocks(rows: int, seed: int):
    """Yield the table block by block (each block seeded by its index)."""
    children = np.random.SeedSequence(seed).spawn((rows + BLOCK_ROWS - 1) // BLOCK_ROWS)
    for index, child in enumerate(children):
        start = index * BLOCK_ROWS
        # Always draw a whole block, then cut: values are drawn column by column, so a shorter draw
        # would change every column after the first and break the prefix property.
        block = generate_block(start, BLOCK_ROWS, np.random.default_rng(child))
        yield block.head(min(BLOCK_ROWS, rows - start))


def generate(rows: int, seed: int) -> pd.DataFrame:
    """The whole table in memory (for tests and small samples)."""
    return pd.concat(list(iter_blocks(rows, seed)), ignore_index=True)
