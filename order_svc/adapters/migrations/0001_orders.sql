CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED')),
    total       numeric(14, 2) NOT NULL CHECK (total >= 0),
    currency    text        NOT NULL,
    reason      text,
    placed_by   uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX orders_status ON orders (status, created_at);

CREATE TABLE order_lines (
    order_id   uuid    NOT NULL REFERENCES orders (id),
    line_no    integer NOT NULL,
    sku        text    NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(14, 2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);
