-- Pages of instances, newest first, keyed on (created_at, id): operators' lists and the console.
CREATE INDEX saga_instance_created ON saga_instance (saga, created_at, id);
