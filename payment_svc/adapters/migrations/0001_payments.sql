CREATE TABLE customers (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    balance         numeric(14, 2) NOT NULL CHECK (balance >= 0),
    opening_balance numeric(14, 2) NOT NULL CHECK (opening_balance >= 0)
);

CREATE TABLE payments (
    order_id    uuid        PRIMARY KEY,
    customer_id text,
    amount      numeric(14, 2) NOT NULL CHECK (amount >= 0),
    status      text        NOT NULL CHECK (status IN ('CAPTURED', 'DECLINED', 'REFUNDED', 'CANCELLED')),
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every movement of money, append-only: the checker proves balances from it.
CREATE TABLE ledger (
    id          bigserial   PRIMARY KEY,
    order_id    uuid        NOT NULL,
    customer_id text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount      numeric(14, 2) NOT NULL CHECK (amount > 0),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (order_id, kind)
);
