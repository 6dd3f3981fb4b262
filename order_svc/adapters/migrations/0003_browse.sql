-- Pages of orders, newest first, keyed on (created_at, id), of everyone or of one customer.
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_customer ON orders (customer_id, created_at, id);
