"""Run by oras-py's own interpreter (/opt/oci-clients/py/bin/python), not by pytest:
``python oraspy_driver.py <host:port> <repo> <workdir> <chunk size> [paged]``. Drives
oras-py's client API and prints one JSON object with what it saw, for
test_oras_py.py to check."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import oras.client

    host, repo, workdir = sys.argv[1:4]
    os.chdir(workdir)  # oras-py insists that pushed files lie under the cwd
    client = oras.client.OrasClient(hostname=host, insecure=True)
    target = f'{host}/{repo}'
    seen: dict[str, object] = {'version': client.version(return_items=True)['Version']}
    if sys.argv[5:] == ['paged']:
        for tag in ('v1', 'b', 'a', 'c'):
            client.push(f'{target}:{tag}', files=['hello.txt'], quiet=True)
        seen['tags'] = client.get_tags(target)
        print(json.dumps(seen))
        return 0

    r = client.push(f'{target}:v1', files=['hello.txt:text/plain', 'data.json'],
                    manifest_annotations={'org.example.test': 'oras-py'}, quiet=True)
    seen['push'] = {'status': r.status_code,
                    'digest': r.headers.get('Docker-Content-Digest'),
                    'location': r.headers.get('Location')}

    # Chunked upload: POST, one PATCH per chunk with Content-Range, then PUT.
    r = client.push(f'{target}:chunked', files=['big.bin:application/octet-stream'],
                    do_chunked=True, chunk_size=int(sys.argv[4]), quiet=True)
    seen['push_chunked'] = {'status': r.status_code,
                            'digest': r.headers.get('Docker-Content-Digest')}

    seen['pull'] = sorted(os.path.relpath(p, 'out') for p in
                          client.pull(f'{target}:v1', outdir='out'))
    seen['pull_chunked'] = sorted(os.path.relpath(p, 'out-chunked') for p in
                                  client.pull(f'{target}:chunked', outdir='out-chunked'))
    seen['tags'] = client.get_tags(target)
    seen['tags_n1'] = client.get_tags(target, N=1)
    seen['manifest'] = client.get_manifest(f'{target}:v1')
    r = client.push(f'{target}:doomed', files=['doomed.txt'], quiet=True)
    seen['push_doomed'] = {'status': r.status_code,
                           'digest': r.headers.get('Docker-Content-Digest')}
    seen['deleted'] = client.delete_tags(target, 'doomed')
    seen['tags_after_delete'] = client.get_tags(target)
    print(json.dumps(seen))
    return 0


if __name__ == '__main__':
    sys.exit(main())
