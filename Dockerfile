# The operator and REST API image (the chart runs `python -m dagwright.operator`
# and `python -m dagwright.api` from it).
#   docker build -t ghcr.io/dagwright/dagwright:$VERSION .   (VERSION: pyproject.toml's)
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY dagwright ./dagwright
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt '.[cluster]'

FROM python:3.12-slim
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin dagwright
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/dagwright
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 8081 9090
CMD ["python", "-m", "dagwright.operator"]
