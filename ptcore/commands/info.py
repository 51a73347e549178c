"""`ptcore info`: version, build and backends of this ptcore."""
import json


def add_parser(sub):
    p = sub.add_parser("info", help="version, build and backends of this ptcore")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ptcore import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0
