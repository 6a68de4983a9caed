"""moto's S3, served over keep-alive connections, for the compaction stage's measurement.

`moto_server` runs on werkzeug's development server, which closes the connection after every
response; S3 keeps them open. Measured against it, each GET would also pay for a TCP connect and
close in mailhook's process, which no run against S3 does. The same moto application is served here
by waitress (one process, so one bucket state; HTTP/1.1 keep-alive), so mailhook's CPU per event
counts what it would spend against S3.

    python3 bench/moto_keepalive.py HOST PORT
"""

import sys
import threading

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


LOCK = threading.Lock()


def logged(app):
    """Writes each request as werkzeug's access log does ("GET /bucket/key?query HTTP/1.1" and
    the status), which the stage counts S3 requests from."""
    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            target = environ.get("PATH_INFO", "") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
            line = f'- - "{environ["REQUEST_METHOD"]} {target} {environ["SERVER_PROTOCOL"]}" {status.split()[0]} -\n'
            with LOCK:  # one write a line: print() from many threads interleaves them
                sys.stdout.write(line)
                sys.stdout.flush()
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wrapped


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    app = logged(DomainDispatcherApplication(create_backend_app))
    # 64 threads: the GETs a compaction run keeps in flight.
    waitress.serve(app, host=host, port=port, threads=64, connection_limit=1024, channel_timeout=120,
                   ident=None, _quiet=True)


if __name__ == "__main__":
    main()
