"""Placeholder replaced below."""
def write_report(results, path):
    pass
