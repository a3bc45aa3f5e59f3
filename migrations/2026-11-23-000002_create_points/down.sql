DROP TABLE idempotency_keys; DROP TABLE point_ledger; DROP TABLE wallets;
