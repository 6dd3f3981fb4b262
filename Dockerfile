# One image for all four services; the command picks the service (python -m <service>).
# The environment comes from uv.lock, exactly (uv sync --frozen): no resolution at build time.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# dependencies first, so code changes do not rebuild them
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY libs ./libs
COPY contracts ./contracts
COPY order_svc ./order_svc
COPY payment_svc ./payment_svc
COPY inventory_svc ./inventory_svc
COPY saga ./saga
COPY orderflow ./orderflow
RUN uv sync --frozen --no-dev
ENV PATH=/app/.venv/bin:$PATH ORDERFLOW_READY_FILE=/tmp/ready
RUN useradd --system --uid 10001 orderflow
USER orderflow
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD test -f /tmp/ready
CMD ["python", "-m", "order_svc"]
