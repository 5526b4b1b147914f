/* The audit's findings for people (text with the next steps to take) and
 * for machines (one JSON object, `--output json`).
 * Must not: decide anything the report does not show. */
#ifndef TPM2KMS_REPORT_H
#define TPM2KMS_REPORT_H

#include "audit/audit.h"

#include <stdio.h>

void report_text(FILE *out, const struct audit_result *a);
void report_json(FILE *out, const struct audit_result *a);

#endif
