# syntax=docker/dockerfile:1
# Build stage: compile the Rust extension and build the wheel with maturin.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH="/root/.cargo/bin:${PATH}"
RUN pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rust/ rust/
COPY python/ python/
RUN maturin build --release --out /wheels

# Runtime stage: the wheel and its dependencies, no compilers.
FROM python:3.11-slim-bookworm
RUN useradd --system --create-home --home-dir /app ensemble
COPY --from=build /wheels /wheels
# hiredis: the C parser for the Redis protocol (scale-out sync); redis and boto3 come with the wheel.
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[hiredis]" && rm -rf /wheels
WORKDIR /app
COPY --chown=ensemble config/ config/
RUN mkdir -p /app/data && chown ensemble /app/data
USER ensemble
ENV ENSEMBLE_ENVIRONMENT=production
# Listen on every interface of the container whatever ENSEMBLE_ENVIRONMENT says (development alone
# would pick 127.0.0.1, unreachable through a published port).
ENV ENSEMBLE_HOST=0.0.0.0
EXPOSE 5180
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5180/health').status == 200 else 1)"
ENTRYPOINT ["ensemble"]
CMD ["serve", "--config", "config/ensemble.yaml"]
