CREATE TABLE stock (
    sku             text    PRIMARY KEY,
    name            text    NOT NULL,
    on_hand         integer NOT NULL CHECK (on_hand >= 0),
    opening_on_hand integer NOT NULL CHECK (opening_on_hand >= 0)
);

CREATE TABLE reservations (
    order_id   uuid        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('RESERVED', 'FAILED', 'RELEASED', 'CANCELLED')),
    reason     text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE reservation_lines (
    order_id uuid    NOT NULL REFERENCES reservations (order_id),
    sku      text    NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
