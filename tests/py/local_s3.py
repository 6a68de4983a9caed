"""A local S3 for the Python-driven checks: moto_server on a loopback port (its conditional PUT is
atomic), one bucket, and the environment that points mailhook at it."""

import socket
import subprocess
import time

import boto3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def start(bucket, log):
    """Starts moto_server and creates `bucket`. Returns (process, boto3 client, mailhook env)."""
    port = free_port()
    # Its own process group, so stopping it never touches the caller.
    process = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, start_new_session=True
    )
    if not wait_port(port):
        process.kill()
        raise SystemExit("moto_server did not start")
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=bucket)
    env = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "S3_FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        # Keep the machine's own AWS profile out of the tests.
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    return process, client, env
