"""A local S3 for the Python-driven checks and the benchmarks: moto_server on a loopback port (its
conditional PUT is atomic), one bucket, and the environment that points mailhook at it."""

import os

import boto3

import procs


def start(bucket, log, host="127.0.0.1", server=None):
    """Starts moto_server on `host` (loopback unless a test's own network needs another of this
    machine's addresses), its output into the open file `log`, and creates `bucket`. `server`,
    if given, is another command that serves moto's application, with the host and port appended
    (bench/moto_keepalive.py). Returns (process, boto3 client, mailhook env); stop the process
    with procs.stop."""
    port = procs.free_port()
    cmd = [*server, host, port] if server else ["moto_server", "-H", host, "-p", port]
    process = procs.start(cmd, log)
    if not procs.wait_port(port, process=process, host=host):
        procs.stop(process)
        raise SystemExit("moto_server did not start")
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    try:
        client.create_bucket(Bucket=bucket)
    except BaseException:
        procs.stop(process)  # the caller never gets it, so it would be left running
        raise
    env = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "S3_FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        # Keep the machine's own AWS profile out of the tests. An empty file, not a missing one:
        # the Rust SDK warns about a profile path set in the environment that does not exist.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return process, client, env


def aws_cli_env(endpoint):
    """The environment in which the AWS CLI (scripts/verify, scripts/cleanup) calls every service
    at moto's `endpoint`, with test keys and none of the machine's own AWS profile."""
    return dict(
        os.environ,
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
