-- The system owns its prices: what an order is charged is catalog price × quantity.
CREATE TABLE catalog (
    sku        text           PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9_-]{0,31}$'),
    name       text           NOT NULL CHECK (name <> ''),
    price      numeric(14, 2) NOT NULL CHECK (price > 0),
    updated_at timestamptz    NOT NULL DEFAULT clock_timestamp()
);

-- A refused order: REJECTED up front by order_svc (unknown SKU, wrong price, over the cap,
-- invalid data…), total 0 and no lines, and no saga. Its customer may be missing (invalid data).
ALTER TABLE orders ADD COLUMN refused boolean NOT NULL DEFAULT false;
ALTER TABLE orders ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE orders ADD CONSTRAINT orders_refused_is_rejected_and_empty
    CHECK (NOT refused OR (status = 'REJECTED' AND total = 0));
ALTER TABLE orders ADD CONSTRAINT orders_customer_known_unless_refused
    CHECK (customer_id IS NOT NULL OR refused);
