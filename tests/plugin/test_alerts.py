#!/usr/bin/python3
"""dist/prometheus/tpm2-kms-rules.yml with Debian's promtool: the rules
check, every alert fires on the series it is for and stays silent on the
ones it is not (each case below, run by `promtool test rules`), and every
metric the rules and the Grafana dashboard (dist/grafana/tpm2-kms.json)
name is one the daemon exports (a live /metrics)."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

from kmsclient import Daemon, Swtpm, scrape_metrics, tempdir, tpm2_kms

SRC = os.environ.get('TOP_SRCDIR', os.getcwd())
RULES = os.path.join(SRC, 'dist', 'prometheus', 'tpm2-kms-rules.yml')
DASHBOARD = os.path.join(SRC, 'dist', 'grafana', 'tpm2-kms.json')
PROMTOOL = shutil.which('promtool')
# The rules do not depend on the build: the sanitizer build's run of this
# file checks the live metrics only, and leaves promtool to the normal one.
SANITIZED = 'libasan' in subprocess.run(['ldd', tpm2_kms()], capture_output=True,
                                        text=True).stdout
RULES_ONLY = 'the rules do not depend on the build: the normal build tests them'

# (alert, interval, series, [(eval time, [(labels, value)] expected firing)])
# A case with an empty list is a silent one.
CASES = [
    ('Tpm2KmsTPMDown', '1m',
     {'tpm2kms_tpm_up{instance="a"}': '1 1 0 0 0 0 0 0',
      'tpm2kms_tpm_up{instance="b"}': '1 0 1 0 1 0 1 0'},
     [('3m', []), ('5m', [({'instance': 'a'}, 0)])]),
    ('Tpm2KmsNotHealthy', '1m',
     {'tpm2kms_status_ok{instance="a"}': '1 0x10', 'tpm2kms_status_ok{instance="b"}': '1x10'},
     [('4m', []), ('8m', [({'instance': 'a'}, 0)])]),
    ('Tpm2KmsWriteKeyNotEscrowed', '1m',
     {'tpm2kms_escrow_missing{instance="a"}': '1x30',
      'tpm2kms_escrow_missing{instance="b"}': '0x30'},
     [('10m', []), ('20m', [({'instance': 'a'}, 1)])]),
    ('Tpm2KmsGenerationsNotLoaded', '1m',
     {'tpm2kms_kek_generations_not_loaded{instance="a"}': '2x20',
      'tpm2kms_kek_generations_not_loaded{instance="b"}': '0x20'},
     [('5m', []), ('15m', [({'instance': 'a'}, 2)])]),
    ('Tpm2KmsPCRApprovalMissing', '1m',
     {'tpm2kms_pcr_approval_missing{instance="a"}': '1x20',
      'tpm2kms_pcr_approval_missing{instance="b"}': '0x20'},
     [('3m', []), ('8m', [({'instance': 'a'}, 1)])]),
    ('Tpm2KmsStateUnreadable', '1m',
     {'tpm2kms_state_unreadable{instance="a",what="escrow"}': '1x10',
      'tpm2kms_state_unreadable{instance="a",what="state"}': '0x10',
      'tpm2kms_state_unreadable{instance="b",what="state"}': '0x10'},
     [('3m', []), ('8m', [({'instance': 'a'}, 1)])]),
    # Encrypt failures count; Decrypt failures and Encrypt successes do not.
    ('Tpm2KmsEncryptErrors', '1m',
     {'tpm2kms_requests_total{instance="a",api="v2",method="Encrypt",code="14"}': '0+5x20',
      'tpm2kms_requests_total{instance="b",api="v2",method="Encrypt",code="0"}': '0+5x20',
      'tpm2kms_requests_total{instance="b",api="v2",method="Decrypt",code="3"}': '0+5x20'},
     [('3m', []), ('12m', [({'instance': 'a'}, None)])]),
    ('Tpm2KmsTPMErrors', '1m',
     {'tpm2kms_tpm_errors_total{instance="a",code="0x922"}': '0+1x30',
      'tpm2kms_tpm_errors_total{instance="b",code="0x922"}': '3x30'},
     [('5m', []), ('25m', [({'instance': 'a'}, None)])]),
    # p99 of TPM commands: about 1 s on a, 10 ms on b.
    ('Tpm2KmsTPMSlow', '1m',
     {'tpm2kms_tpm_command_duration_seconds_bucket{instance="a",command="NV_Increment",le="0.01"}': '0x30',
      'tpm2kms_tpm_command_duration_seconds_bucket{instance="a",command="NV_Increment",le="1"}': '0x30',
      'tpm2kms_tpm_command_duration_seconds_bucket{instance="a",command="NV_Increment",le="+Inf"}': '0+10x30',
      'tpm2kms_tpm_command_duration_seconds_bucket{instance="b",command="NV_Increment",le="0.01"}': '0+10x30',
      'tpm2kms_tpm_command_duration_seconds_bucket{instance="b",command="NV_Increment",le="1"}': '0+10x30',
      'tpm2kms_tpm_command_duration_seconds_bucket{instance="b",command="NV_Increment",le="+Inf"}': '0+10x30'},
     [('8m', []), ('20m', [({'instance': 'a'}, None)])]),
    ('Tpm2KmsNonceCounterNearItsEnd', '1m',
     {'tpm2kms_nonce_value{instance="a"}': '17000000000000000000',
      'tpm2kms_nonce_value{instance="b"}': '123456'},
     [('0m', [({'instance': 'a'}, None)])]),
    # Three restarts within the hour on a, one on b.
    ('Tpm2KmsRestarting', '5m',
     {'tpm2kms_start_time_seconds{instance="a"}': '100 100 400 400 700 700 1000 1000',
      'tpm2kms_start_time_seconds{instance="b"}': '100 100 400 400 400 400 400 400'},
     [('35m', [({'instance': 'a'}, 3)])]),
    # Nodes writing under two key_ids; then all under one.
    ('Tpm2KmsKeyIdDiffers', '1m',
     {'tpm2kms_kek_generation_info{instance="a",generation="2",key_id="g2",state="write"}': '1x40',
      'tpm2kms_kek_generation_info{instance="c",generation="1",key_id="g1",state="write"}': '1x20',
      'tpm2kms_kek_generation_info{instance="c",generation="2",key_id="g2",state="write"}': '_x21 1x19'},
     [('10m', []), ('20m', [({}, 2)]), ('38m', [])]),
    ('Tpm2KmsAuditUndecryptable', '1m',
     {'tpm2kms_audit_undecryptable_objects{instance="a"}': '3',
      'tpm2kms_audit_undecryptable_objects{instance="b"}': '0'},
     [('0m', [({'instance': 'a'}, 3)])]),
    # An audit that did not finish on a; none made yet on b.
    ('Tpm2KmsAuditIncomplete', '1m',
     {'tpm2kms_audit_complete{instance="a"}': '0x90',
      'tpm2kms_audit_timestamp_seconds{instance="a"}': '1000x90',
      'tpm2kms_audit_complete{instance="b"}': '0x90',
      'tpm2kms_audit_timestamp_seconds{instance="b"}': '0x90'},
     [('30m', []), ('80m', [({'instance': 'a'}, None)])]),
    # Generation 1 is decrypt-only and still holds objects; generation 2,
    # the write key, is not a finding.
    ('Tpm2KmsOldGenerationStillHoldsData', '5m',
     {'tpm2kms_audit_objects{instance="a",generation="1"}': '5x2400',
      'tpm2kms_audit_objects{instance="a",generation="2"}': '100x2400',
      'tpm2kms_kek_generation_info{instance="a",generation="1",key_id="g1",state="decrypt-only"}': '1x2400',
      'tpm2kms_kek_generation_info{instance="a",generation="2",key_id="g2",state="write"}': '1x2400'},
     [('3d', []), ('8d', [({'instance': 'a', 'generation': '1'}, 5)])]),
    # a rotated and was never audited; b rotated and was audited on day
    # 40; c has only its write key.
    ('Tpm2KmsAuditTooOld', '5m',
     {'tpm2kms_audit_timestamp_seconds{instance="a"}': '0x11900',
      'tpm2kms_kek_generation_info{instance="a",generation="1",key_id="g",state="decrypt-only"}': '1x11900',
      'tpm2kms_audit_timestamp_seconds{instance="b"}': '3456000x11900',
      'tpm2kms_kek_generation_info{instance="b",generation="1",key_id="g",state="decrypt-only"}': '1x11900',
      'tpm2kms_audit_timestamp_seconds{instance="c"}': '0x11900',
      'tpm2kms_kek_generation_info{instance="c",generation="1",key_id="g",state="write"}': '1x11900'},
     [('2h', []), ('31d', [({'instance': 'a'}, None)]), ('41d', [({'instance': 'a'}, None)])]),
]


def rules():
    with open(RULES) as f:
        return {r['alert']: r for g in yaml.safe_load(f)['groups'] for r in g['rules']}


def render(template, labels, value):
    """The annotation templates the rules use: {{ $labels.x }}, {{ $value }}."""
    out = re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels.get(m.group(1), ''), template)
    return out.replace('{{ $value }}', '%g' % value if value is not None else '')


@unittest.skipUnless(PROMTOOL, 'promtool (Debian: prometheus) is not installed')
class Alerts(unittest.TestCase):
    @unittest.skipIf(SANITIZED, RULES_ONLY)
    def test_rules_check(self):
        r = subprocess.run([PROMTOOL, 'check', 'rules', RULES], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    @unittest.skipIf(SANITIZED, RULES_ONLY)
    def test_every_alert_is_tested_both_ways(self):
        have = rules()
        tested = {c[0] for c in CASES}
        self.assertEqual(sorted(set(have) - tested), [])
        for name, rule in have.items():
            self.assertIn(rule['labels'].get('severity'), ('critical', 'warning'), name)
            for key in ('summary', 'description', 'runbook_url'):
                self.assertIn(key, rule['annotations'], name)
            self.assertTrue(rule['annotations']['runbook_url'].startswith('docs/operations.md#'))

    @unittest.skipIf(SANITIZED, RULES_ONLY)
    def test_every_alert_fires_when_it_should_and_only_then(self):
        have = rules()
        # One promtool run per sample interval, evaluated at that interval:
        # the cases that span weeks would take minutes at one a minute.
        runs = {}
        for alert, interval, series, evals in CASES:
            rule = have[alert]
            checks = []
            for at, firing in evals:
                exp = []
                for labels, value in firing:
                    full = dict(labels, **rule['labels'])
                    exp.append({'exp_labels': full,
                                'exp_annotations': {k: render(v, full, value)
                                                    for k, v in rule['annotations'].items()}})
                checks.append({'eval_time': at, 'alertname': alert, 'exp_alerts': exp})
            runs.setdefault(interval, []).append(
                {'interval': interval,
                 'input_series': [{'series': s, 'values': v} for s, v in series.items()],
                 'alert_rule_test': checks})
            # The firing cases must not be vacuous.
            self.assertTrue(any(f for _, f in evals), alert)
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(RULES, d)
            for interval, tests in runs.items():
                path = os.path.join(d, 'test-%s.yml' % interval)
                with open(path, 'w') as f:
                    yaml.safe_dump({'rule_files': [os.path.basename(RULES)],
                                    'evaluation_interval': interval, 'tests': tests}, f)
                r = subprocess.run([PROMTOOL, 'test', 'rules', path], capture_output=True,
                                   text=True)
                self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-3000:])

    def test_the_rules_and_the_dashboard_name_only_metrics_the_daemon_exports(self):
        root = tempdir('kmsal-')
        tpm = Swtpm(root)
        tpm.start()
        metrics = os.path.join(root, 'metrics.sock')
        daemon = Daemon(root, tpm, '--metrics-listen', metrics)
        daemon.start()
        try:
            text = scrape_metrics(metrics)
        finally:
            daemon.stop()
            tpm.kill()
            shutil.rmtree(root, ignore_errors=True)
        exported = set(re.findall(r'^# TYPE (\w+) ', text, re.M))
        with open(DASHBOARD) as f:
            dash = json.load(f)
        exprs = [r['expr'] for r in rules().values()]
        exprs += [t['expr'] for p in dash['panels'] for t in p['targets']]
        exprs.append(dash['templating']['list'][1]['query'])
        named = set()
        for expr in exprs:
            named |= set(re.findall(r'\b(tpm2kms_\w+?)(?:_bucket|_sum|_count)?\b', expr))
        self.assertGreater(len(named), 15)
        self.assertEqual(sorted(named - exported), [])
        self.assertEqual(len({p['id'] for p in dash['panels']}), len(dash['panels']))


if __name__ == '__main__':
    unittest.main(verbosity=2)
