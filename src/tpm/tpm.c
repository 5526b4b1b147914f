#include "config.h"

#include "base/log.h"
#include "tpm/tpm.h"
#include "tpm/tpmobj.h"
#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_sys.h>
#include <tss2/tss2_tctildr.h>

/* How long one wait for a TPM answer may block (Esys_SetTimeout). */
#define TPM_RECEIVE_TIMEOUT_MS 1000

/* Operations other than the nonce counter get this long to ride out
 * transient TPM conditions. */
#define TPM_DEFAULT_PATIENCE_US (30u * 1000000u)

/* Handle ranges by their top byte (tss2's own TPM2_HR_ macros shift 0x80
 * into the sign bit of an int). */
#define HANDLE_TYPE(h)        ((uint32_t)(h) >> 24)
#define HANDLES_HMAC_SESSION  0x02000000u
#define HANDLES_TRANSIENT     0x80000000u

/* A pass-through TCTI in front of the loaded one that times each command:
 * the only place that sees every command go out and its answer come in. */
struct timing_tcti {
	TSS2_TCTI_CONTEXT_COMMON_V2 common; /* first: this is what ESAPI calls */
	TSS2_TCTI_CONTEXT *inner;
	uint32_t command;
	uint64_t sent_us;
	struct tpm_command_timing ring[TPM_TIMINGS_MAX];
	size_t n;
	struct tpm_watch *watch; /* tpm_open_watched; NULL: none */
};

struct tpm {
	TSS2_TCTI_CONTEXT *tcti; /* the loaded TCTI */
	struct timing_tcti timing;
	ESYS_CONTEXT *esys;
	/* The counter's ESYS_TR is only ESAPI metadata, not a TPM resource,
	 * so it is kept between calls. */
	ESYS_TR nv;
	uint32_t nv_index;
	TSS2_RC last_rc;
	bool owner_auth_set;
};

/* Strips the parameter/handle/session number from format-one codes. */
static TSS2_RC rc_base(TSS2_RC rc)
{
	if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER)
		return rc;
	if (rc & TPM2_RC_FMT1)
		return rc & (TPM2_RC_FMT1 | 0x3f);
	return rc & 0xfff;
}

static bool rc_transient(TSS2_RC rc)
{
	switch (rc_base(rc)) {
	case TPM2_RC_NV_RATE:
	case TPM2_RC_NV_UNAVAILABLE:
	case TPM2_RC_RETRY:
	case TPM2_RC_YIELDED:
	case TPM2_RC_TESTING:
	case TPM2_RC_OBJECT_MEMORY:
	case TPM2_RC_SESSION_MEMORY:
	case TPM2_RC_MEMORY:
		return true;
	default:
		return false;
	}
}

/* Without a resource manager (swtpm, /dev/tpm0) a process killed in the
 * middle of an operation leaves its session or object loaded, and a TPM has
 * only a few slots. We keep nothing loaded between operations, and flush
 * only the kind the TPM is short of, which the failing command does not
 * hold: what is there belongs to dead processes, or to a live one that
 * will see an error and retry. */
/* Flushes a loaded object or session, if there is one. */
static void flush(tpm *t, ESYS_TR *handle)
{
	if (*handle != ESYS_TR_NONE)
		Esys_FlushContext(t->esys, *handle);
	*handle = ESYS_TR_NONE;
}

static void flush_leftovers(tpm *t, TPM2_HANDLE first)
{
	TSS2_SYS_CONTEXT *sys = NULL;
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	unsigned flushed = 0;

	if (Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
			       TPM2_CAP_HANDLES, first, 64, &more, &cap) != TSS2_RC_SUCCESS ||
	    Esys_GetSysContext(t->esys, &sys) != TSS2_RC_SUCCESS) {
		Esys_Free(cap);
		return;
	}
	for (UINT32 i = 0; i < cap->data.handles.count; i++) {
		TPM2_HANDLE h = cap->data.handles.handle[i];

		if (HANDLE_TYPE(h) != HANDLE_TYPE(first) &&
		    !(first == HANDLES_HMAC_SESSION && HANDLE_TYPE(h) == TPM2_HT_POLICY_SESSION))
			continue;
		if (Tss2_Sys_FlushContext(sys, h) == TSS2_RC_SUCCESS)
			flushed++;
	}
	Esys_Free(cap);
	if (flushed)
		log_warning("tpm: out of %s slots; flushed %u left behind by killed processes",
			    first == HANDLES_TRANSIENT ? "object" : "session", flushed);
}

/* After a transient condition: sleeps (this runs off the event loop) and
 * returns true when there is time for another try. */
static bool retry_later(tpm *t, TSS2_RC rc, uint64_t deadline_us, unsigned *attempt)
{
	uint64_t delay_us;

	if (!rc_transient(rc))
		return false;
	/* Memory warnings that persist are leftovers, not load. */
	if (*attempt == 4 && rc_base(rc) == TPM2_RC_SESSION_MEMORY)
		flush_leftovers(t, HANDLES_HMAC_SESSION);
	if (*attempt == 4 && rc_base(rc) == TPM2_RC_OBJECT_MEMORY)
		flush_leftovers(t, HANDLES_TRANSIENT);
	delay_us = 500u << (*attempt < 8 ? *attempt : 8); /* 0.5 ms .. 128 ms */
	if (util_now_monotonic_us() + delay_us > deadline_us)
		return false;
	(*attempt)++;
	struct timespec ts = {.tv_sec = (time_t)(delay_us / 1000000u),
			      .tv_nsec = (long)(delay_us % 1000000u) * 1000};
	nanosleep(&ts, NULL);
	return true;
}

/* Translates a failure and logs it once. */
static int fail(tpm *t, const char *what, TSS2_RC rc)
{
	TSS2_RC layer = rc & TSS2_RC_LAYER_MASK, base = rc_base(rc);
	int r;

	if (t)
		t->last_rc = rc;
	if (t && t->timing.watch && t->timing.watch->cancelled) {
		log_debug("tpm: %s: cancelled", what);
		return -ECANCELED;
	}

	if (layer == TSS2_TCTI_RC_LAYER) {
		r = -EIO;
	} else if (layer == TSS2_ESAPI_RC_LAYER || layer == TSS2_SYS_RC_LAYER || layer == TSS2_MU_RC_LAYER) {
		switch (rc & 0xffff) {
		case TSS2_BASE_RC_IO_ERROR:
		case TSS2_BASE_RC_NO_CONNECTION:
		case TSS2_BASE_RC_BAD_SEQUENCE: /* a command was cut off */
		case TSS2_BASE_RC_TRY_AGAIN:
		case TSS2_BASE_RC_MALFORMED_RESPONSE:
		case TSS2_BASE_RC_INSUFFICIENT_RESPONSE:
			r = -EIO;
			break;
		case TSS2_BASE_RC_MEMORY:
			r = -ENOMEM;
			break;
		default:
			r = -EPROTO;
		}
	} else if (layer == TSS2_TPM_RC_LAYER) {
		if (rc_transient(rc))
			r = -ETIMEDOUT;
		else if (base == TPM2_RC_HANDLE || base == TPM2_RC_REFERENCE_H0)
			r = -ENOENT;
		else if (base == TPM2_RC_NV_DEFINED)
			r = -EEXIST;
		else if (base == TPM2_RC_BAD_AUTH || base == TPM2_RC_AUTH_FAIL)
			r = -EACCES;
		else if (base == TPM2_RC_INTEGRITY || base == TPM2_RC_BINDING ||
			 base == TPM2_RC_KEY || base == TPM2_RC_SIZE)
			r = -EKEYREJECTED;
		else
			r = -EPROTO;
	} else {
		r = -EIO; /* TCTI loader and anything below it */
	}
	if (r == -ENOENT)
		log_debug("tpm: %s: %s", what, Tss2_RC_Decode(rc));
	else
		log_error("tpm: %s: %s", what, Tss2_RC_Decode(rc));
	return r;
}

static uint64_t patience(void)
{
	return util_now_monotonic_us() + TPM_DEFAULT_PATIENCE_US;
}

static TSS2_RC timing_transmit(TSS2_TCTI_CONTEXT *ctx, size_t size, const uint8_t *command)
{
	struct timing_tcti *tt = (struct timing_tcti *)ctx;

	/* TPM command header: tag (2), size (4), command code (4). */
	tt->command = size >= 10 ? util_get_be32(command + 6) : 0;
	tt->sent_us = util_now_monotonic_us();
	if (tt->watch) {
		if (tt->watch->cancelled) {
			tt->sent_us = 0;
			return TSS2_TCTI_RC_IO_ERROR;
		}
		tt->watch->since_us = tt->sent_us;
	}
	return Tss2_Tcti_Transmit(tt->inner, size, command);
}

static TSS2_RC timing_receive(TSS2_TCTI_CONTEXT *ctx, size_t *size, uint8_t *response,
			      int32_t timeout)
{
	struct timing_tcti *tt = (struct timing_tcti *)ctx;
	TSS2_RC rc = Tss2_Tcti_Receive(tt->inner, size, response, timeout);

	if (response && tt->sent_us && (rc & 0xffff) != TSS2_BASE_RC_TRY_AGAIN) {
		struct tpm_command_timing *e = &tt->ring[tt->n % TPM_TIMINGS_MAX];

		e->command = tt->command;
		e->duration_us = (uint32_t)(util_now_monotonic_us() - tt->sent_us);
		tt->n++;
		tt->sent_us = 0;
	}
	if (tt->watch && (rc & 0xffff) != TSS2_BASE_RC_TRY_AGAIN)
		tt->watch->since_us = 0;
	return rc;
}

static void timing_finalize(TSS2_TCTI_CONTEXT *ctx)
{
	/* The loaded TCTI is finalised by tpm_close. */
}

static TSS2_RC timing_cancel(TSS2_TCTI_CONTEXT *ctx)
{
	return Tss2_Tcti_Cancel(((struct timing_tcti *)ctx)->inner);
}

static TSS2_RC timing_poll_handles(TSS2_TCTI_CONTEXT *ctx, TSS2_TCTI_POLL_HANDLE *handles,
				   size_t *n)
{
	return Tss2_Tcti_GetPollHandles(((struct timing_tcti *)ctx)->inner, handles, n);
}

static TSS2_RC timing_set_locality(TSS2_TCTI_CONTEXT *ctx, uint8_t locality)
{
	return Tss2_Tcti_SetLocality(((struct timing_tcti *)ctx)->inner, locality);
}

static TSS2_RC timing_make_sticky(TSS2_TCTI_CONTEXT *ctx, TPM2_HANDLE *handle, uint8_t sticky)
{
	return Tss2_Tcti_MakeSticky(((struct timing_tcti *)ctx)->inner, handle, sticky);
}

static void timing_init(struct timing_tcti *tt, TSS2_TCTI_CONTEXT *inner)
{
	memset(tt, 0, sizeof(*tt));
	tt->common.v1.magic = TSS2_TCTI_MAGIC(inner);
	tt->common.v1.version = 2;
	tt->common.v1.transmit = timing_transmit;
	tt->common.v1.receive = timing_receive;
	tt->common.v1.finalize = timing_finalize;
	tt->common.v1.cancel = timing_cancel;
	tt->common.v1.getPollHandles = timing_poll_handles;
	tt->common.v1.setLocality = timing_set_locality;
	tt->common.makeSticky = timing_make_sticky;
	tt->inner = inner;
}

size_t tpm_take_timings(tpm *t, struct tpm_command_timing *out, size_t max)
{
	struct timing_tcti *tt = &t->timing;
	size_t first = tt->n > TPM_TIMINGS_MAX ? tt->n - TPM_TIMINGS_MAX : 0, k = 0;

	for (size_t i = first; i < tt->n && k < max; i++)
		out[k++] = tt->ring[i % TPM_TIMINGS_MAX];
	tt->n = 0;
	return k;
}

const char *tpm_command_name(uint32_t command)
{
	switch (command) {
	case TPM2_CC_NV_Increment:
		return "NV_Increment";
	case TPM2_CC_NV_Read:
		return "NV_Read";
	case TPM2_CC_NV_ReadPublic:
		return "NV_ReadPublic";
	case TPM2_CC_NV_DefineSpace:
		return "NV_DefineSpace";
	case TPM2_CC_ReadPublic:
		return "ReadPublic";
	case TPM2_CC_StartAuthSession:
		return "StartAuthSession";
	case TPM2_CC_FlushContext:
		return "FlushContext";
	case TPM2_CC_Load:
		return "Load";
	case TPM2_CC_Unseal:
		return "Unseal";
	case TPM2_CC_Create:
		return "Create";
	case TPM2_CC_CreatePrimary:
		return "CreatePrimary";
	case TPM2_CC_EvictControl:
		return "EvictControl";
	case TPM2_CC_GetRandom:
		return "GetRandom";
	case TPM2_CC_GetCapability:
		return "GetCapability";
	case TPM2_CC_Startup:
		return "Startup";
	case TPM2_CC_Import:
		return "Import";
	case TPM2_CC_Duplicate:
		return "Duplicate";
	case TPM2_CC_LoadExternal:
		return "LoadExternal";
	case TPM2_CC_VerifySignature:
		return "VerifySignature";
	case TPM2_CC_PolicyDuplicationSelect:
		return "PolicyDuplicationSelect";
	case TPM2_CC_PolicyAuthorize:
		return "PolicyAuthorize";
	case TPM2_CC_PolicyCommandCode:
		return "PolicyCommandCode";
	case TPM2_CC_PolicyPCR:
		return "PolicyPCR";
	case TPM2_CC_PolicyOR:
		return "PolicyOR";
	case TPM2_CC_PCR_Read:
		return "PCR_Read";
	default:
		return NULL;
	}
}

/* Why a TCTI could not open, when its path says: the file it names. */
static void log_tcti_hint(const char *conf)
{
	const char *colon = strchr(conf, ':'), *p;
	char path[PATH_MAX];
	size_t n;
	struct stat st;

	if (!colon)
		return;
	if (strncmp(conf, "device:", 7) == 0) {
		p = colon + 1;
		n = strlen(p);
	} else if (strncmp(conf, "swtpm:", 6) == 0 || strncmp(conf, "mssim:", 6) == 0) {
		p = strstr(colon + 1, "path=");
		if (!p)
			return;
		p += 5;
		n = strcspn(p, ",");
	} else {
		return;
	}
	if (n == 0 || n >= sizeof(path))
		return;
	memcpy(path, p, n);
	path[n] = '\0';
	if (stat(path, &st) == 0) {
		if (access(path, R_OK | W_OK) < 0)
			log_error("tpm: %s: %s (the TPM device is usually group tss: add the user "
				  "to it)",
				  path, strerror(errno));
		return;
	}
	if (errno != ENOENT) {
		log_error("tpm: %s: %s", path, strerror(errno));
	} else if (strncmp(conf, "device:", 7) == 0) {
		log_error("tpm: there is no %s: no TPM, or its driver is not loaded (a TPM 2.0 "
			  "enabled in firmware shows up as /dev/tpmrm0)",
			  path);
	} else if ((strncmp(path, "/tmp/", 5) == 0 || strncmp(path, "/var/tmp/", 9) == 0) &&
		   getenv("INVOCATION_ID")) {
		log_error("tpm: %s does not exist here: this service has its own /tmp "
			  "(PrivateTmp=yes); put the TPM simulator's socket under /run",
			  path);
	} else {
		log_error("tpm: %s does not exist: is the TPM simulator running?", path);
	}
}

int tpm_open(const char *tcti_conf, tpm **ret)
{
	return tpm_open_watched(tcti_conf, NULL, ret);
}

int tpm_open_watched(const char *tcti_conf, struct tpm_watch *watch, tpm **ret)
{
	tpm *t = calloc(1, sizeof(*t));
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	TSS2_RC rc;
	int r;

	if (!t)
		return -ENOMEM;
	t->nv = ESYS_TR_NONE;
	rc = Tss2_TctiLdr_Initialize(tcti_conf, &t->tcti);
	if (rc != TSS2_RC_SUCCESS) {
		log_error("tpm: cannot open TCTI \"%s\": %s", tcti_conf, Tss2_RC_Decode(rc));
		log_tcti_hint(tcti_conf);
		r = -EIO;
		goto out;
	}
	timing_init(&t->timing, t->tcti);
	t->timing.watch = watch;
	rc = Esys_Initialize(&t->esys, (TSS2_TCTI_CONTEXT *)&t->timing, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Esys_Initialize", rc);
		goto out;
	}
	/* Each wait for an answer is bounded. ESAPI's synchronous calls wait
	 * again after a timeout, so this alone does not end a command that
	 * never returns: the watching thread (tpm_open_watched) sees it. */
	rc = Esys_SetTimeout(t->esys, TPM_RECEIVE_TIMEOUT_MS);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Esys_SetTimeout", rc);
		goto out;
	}
	/* A TPM that was never started (a bare simulator) says INITIALIZE;
	 * a started one answers. The kernel resource manager starts it. */
	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_TPM_PROPERTIES, TPM2_PT_MANUFACTURER, 1, &more, &cap);
	Esys_Free(cap);
	if (rc_base(rc) == TPM2_RC_INITIALIZE) {
		rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
		if (rc != TSS2_RC_SUCCESS && rc_base(rc) != TPM2_RC_INITIALIZE) {
			r = fail(t, "Startup", rc);
			goto out;
		}
	} else if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "GetCapability", rc);
		goto out;
	}
	*ret = t;
	t = NULL;
	r = 0;
out:
	tpm_close(t);
	return r;
}

int tpm_set_owner_auth(tpm *t, const uint8_t *auth, size_t len)
{
	TPM2B_AUTH a = {0};
	TSS2_RC rc;

	if (len == 0 || len > TPM_OWNER_AUTH_MAX || len > sizeof(a.buffer))
		return -EINVAL;
	a.size = (UINT16)len;
	memcpy(a.buffer, auth, len);
	rc = Esys_TR_SetAuth(t->esys, ESYS_TR_RH_OWNER, &a);
	util_wipe(&a, sizeof(a));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "set the owner password", rc);
	t->owner_auth_set = true;
	return 0;
}

void tpm_close(tpm *t)
{
	if (!t)
		return;
	if (t->esys && t->owner_auth_set) {
		/* ESAPI keeps its copy until told otherwise: overwrite it. */
		TPM2B_AUTH empty = {0};

		Esys_TR_SetAuth(t->esys, ESYS_TR_RH_OWNER, &empty);
	}
	if (t->esys)
		Esys_Finalize(&t->esys);
	if (t->tcti)
		Tss2_TctiLdr_Finalize(&t->tcti);
	free(t);
}

/* An ESYS_TR for a persistent object or NV index (what names it in a
 * failure), or -ENOENT; *ret untouched on failure. */
static int tr_open(tpm *t, TPM2_HANDLE handle, const char *what, ESYS_TR *ret)
{
	ESYS_TR tr = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;

	do
		rc = Esys_TR_FromTPMPublic(t->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
					   &tr);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, what, rc);
	*ret = tr;
	return 0;
}

/* ESYS_TR for the persistent SRK, or -ENOENT. */
static int srk_open(tpm *t, ESYS_TR *ret)
{
	return tr_open(t, TPM_SRK_HANDLE, "look up SRK 0x81000001", ret);
}

static int tr_name(tpm *t, ESYS_TR tr, struct tpm_name *ret)
{
	TPM2B_NAME *name = NULL;
	TSS2_RC rc;

	rc = Esys_TR_GetName(t->esys, tr, &name);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "TR_GetName", rc);
	if (name->size > sizeof(ret->bytes)) {
		Esys_Free(name);
		return -EPROTO;
	}
	memcpy(ret->bytes, name->name, name->size);
	ret->len = name->size;
	Esys_Free(name);
	return 0;
}

/* A storage parent: restricted decryption key, any algorithm. */
static int srk_suitable(tpm *t, ESYS_TR srk)
{
	TPM2B_PUBLIC *pub = NULL;
	TPMA_OBJECT a;
	TSS2_RC rc;
	int r = 0;

	rc = Esys_ReadPublic(t->esys, srk, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL,
			     NULL);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "ReadPublic SRK", rc);
	a = pub->publicArea.objectAttributes;
	if (!(a & TPMA_OBJECT_RESTRICTED) || !(a & TPMA_OBJECT_DECRYPT) ||
	    (a & TPMA_OBJECT_SIGN_ENCRYPT) ||
	    (pub->publicArea.type != TPM2_ALG_RSA && pub->publicArea.type != TPM2_ALG_ECC)) {
		log_error("tpm: the key at 0x81000001 is not a storage key (attributes 0x%08x)",
			  (unsigned)a);
		r = -EEXIST;
	}
	Esys_Free(pub);
	return r;
}

static int srk_create_and_persist(tpm *t)
{
	TPM2B_SENSITIVE_CREATE sensitive = {0};
	TPM2B_PUBLIC tmpl = {
		.publicArea = {
			.type = TPM2_ALG_ECC,
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
					    TPMA_OBJECT_SENSITIVEDATAORIGIN |
					    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
					    TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
			.parameters.eccDetail = {
				.symmetric = {.algorithm = TPM2_ALG_AES,
					      .keyBits.aes = 128,
					      .mode.aes = TPM2_ALG_CFB},
				.scheme.scheme = TPM2_ALG_NULL,
				.curveID = TPM2_ECC_NIST_P256,
				.kdf.scheme = TPM2_ALG_NULL,
			},
			/* TCG template: zero-filled unique of the key size. */
			.unique.ecc = {.x.size = 32, .y.size = 32},
		},
	};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	ESYS_TR primary = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	do
		rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					ESYS_TR_NONE, &sensitive, &tmpl, &outside, &pcrs, &primary,
					NULL, NULL, NULL, NULL);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "CreatePrimary (SRK)", rc);
	rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			       ESYS_TR_NONE, TPM_SRK_HANDLE, &persistent);
	if (rc == TSS2_RC_SUCCESS) {
		Esys_TR_Close(t->esys, &persistent);
		log_info("tpm: created the SRK (ECC P-256) at 0x81000001");
		r = 0;
	} else if (rc_base(rc) == TPM2_RC_NV_DEFINED) {
		/* Another process persisted one first; use that. */
		r = 0;
	} else {
		r = fail(t, "EvictControl (persist SRK)", rc);
	}
	Esys_FlushContext(t->esys, primary);
	return r;
}

int tpm_srk_provision(tpm *t, struct tpm_name *ret_name)
{
	ESYS_TR srk = ESYS_TR_NONE;
	int r;

	r = srk_open(t, &srk);
	if (r == -ENOENT) {
		r = srk_create_and_persist(t);
		if (r < 0)
			return r;
		r = srk_open(t, &srk);
	}
	if (r < 0)
		return r;
	r = srk_suitable(t, srk);
	if (r == 0)
		r = tr_name(t, srk, ret_name);
	Esys_TR_Close(t->esys, &srk);
	return r;
}

/* The SRK, checked against the pinned Name when there is one. */
static int srk_open_pinned(tpm *t, const struct tpm_name *pinned, ESYS_TR *ret)
{
	struct tpm_name name;
	int r;

	r = srk_open(t, ret);
	if (r < 0 || !pinned)
		return r;
	r = tr_name(t, *ret, &name);
	if (r == 0 && !tpm_name_equal(&name, pinned))
		r = -EKEYREJECTED;
	if (r < 0)
		Esys_TR_Close(t->esys, ret);
	return r;
}

int tpm_srk_check(tpm *t, const struct tpm_name *pinned)
{
	ESYS_TR srk = ESYS_TR_NONE;
	int r;

	t->last_rc = 0;

	r = srk_open_pinned(t, pinned, &srk);
	if (r == 0)
		Esys_TR_Close(t->esys, &srk);
	return r;
}

/* A session salted to the SRK: an HMAC session bound to the SRK, or a
 * policy session; attrs are its TPMA_SESSION bits (parameter encryption is
 * AES-128-CFB). */
static int session_start(tpm *t, ESYS_TR srk, TPM2_SE type, TPMA_SESSION attrs, ESYS_TR *ret)
{
	TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_AES,
			    .keyBits.aes = 128,
			    .mode.aes = TPM2_ALG_CFB};
	unsigned attempt = 0;
	uint64_t deadline = patience();
	ESYS_TR s = ESYS_TR_NONE, bind = type == TPM2_SE_HMAC ? srk : ESYS_TR_NONE;
	TSS2_RC rc;

	do
		rc = Esys_StartAuthSession(t->esys, srk, bind, ESYS_TR_NONE, ESYS_TR_NONE,
					   ESYS_TR_NONE, NULL, type, &sym, TPM2_ALG_SHA256, &s);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, type == TPM2_SE_HMAC ? "StartAuthSession" : "StartAuthSession (policy)",
			    rc);
	rc = Esys_TRSess_SetAttributes(t->esys, s, attrs | TPMA_SESSION_CONTINUESESSION, 0xff);
	if (rc != TSS2_RC_SUCCESS) {
		Esys_FlushContext(t->esys, s);
		return fail(t, "TRSess_SetAttributes", rc);
	}
	*ret = s;
	return 0;
}

/* The SRK and a session on it, for one operation; end() releases both. */
static int srk_session_begin(tpm *t, ESYS_TR *ret_srk, ESYS_TR *ret_session)
{
	int r = srk_open(t, ret_srk);

	if (r < 0)
		return r;
	r = session_start(t, *ret_srk, TPM2_SE_HMAC, TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT,
			  ret_session);
	if (r < 0)
		Esys_TR_Close(t->esys, ret_srk);
	return r;
}

static void srk_session_end(tpm *t, ESYS_TR *srk, ESYS_TR *session)
{
	if (*session != ESYS_TR_NONE)
		Esys_FlushContext(t->esys, *session);
	if (*srk != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, srk);
	*session = *srk = ESYS_TR_NONE;
}

static int srk_load(tpm *t, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
		    const char *what, ESYS_TR *srk, ESYS_TR *session, ESYS_TR *ret);

static int marshal_sealed(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
			  struct tpm_sealed *ret)
{
	size_t off = 0;
	TSS2_RC rc;

	rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, ret->pub, sizeof(ret->pub), &off);
	if (rc != TSS2_RC_SUCCESS)
		return fail(NULL, "marshal public area", rc);
	ret->pub_len = off;
	off = 0;
	rc = Tss2_MU_TPM2B_PRIVATE_Marshal(priv, ret->priv, sizeof(ret->priv), &off);
	if (rc != TSS2_RC_SUCCESS)
		return fail(NULL, "marshal private area", rc);
	ret->priv_len = off;
	return 0;
}

static int unmarshal_sealed(const struct tpm_sealed *s, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv)
{
	size_t off = 0;

	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(s->pub, s->pub_len, &off, pub) != TSS2_RC_SUCCESS ||
	    off != s->pub_len)
		return -EINVAL;
	off = 0;
	if (Tss2_MU_TPM2B_PRIVATE_Unmarshal(s->priv, s->priv_len, &off, priv) !=
		    TSS2_RC_SUCCESS ||
	    off != s->priv_len)
		return -EINVAL;
	return 0;
}

int tpm_kek_create(tpm *t, enum tpm_kek_kind kind, const uint8_t auth_policy[32],
		   uint8_t kek[TPM_KEK_BYTES], struct tpm_sealed *ret)
{
	TPM2B_SENSITIVE_CREATE sensitive = {0};
	TPM2B_PUBLIC tmpl = {
		.publicArea = {
			.type = TPM2_ALG_KEYEDHASH,
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = tpmobj_kek_attributes(kind),
			.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL,
		},
	};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	TPM2B_DIGEST *rnd = NULL;
	TPM2B_PRIVATE *priv = NULL;
	TPM2B_PUBLIC *pub = NULL;
	ESYS_TR srk = ESYS_TR_NONE, session = ESYS_TR_NONE;
	uint8_t mix[TPM_KEK_BYTES];
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	if (kind != TPM_KEK_NONE) {
		tmpl.publicArea.authPolicy.size = 32;
		memcpy(tmpl.publicArea.authPolicy.buffer, auth_policy, 32);
	}
	r = srk_session_begin(t, &srk, &session);
	if (r < 0)
		goto out;

	/* Random bytes come back encrypted by the session. */
	do
		rc = Esys_GetRandom(t->esys, session, ESYS_TR_NONE, ESYS_TR_NONE, TPM_KEK_BYTES,
				    &rnd);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "GetRandom", rc);
		goto out;
	}
	if (rnd->size != TPM_KEK_BYTES) {
		log_error("tpm: GetRandom returned %u bytes", rnd->size);
		r = -EPROTO;
		goto out;
	}
	if (RAND_priv_bytes(mix, sizeof(mix)) != 1) {
		log_error("tpm: RAND_priv_bytes failed");
		r = -EIO;
		goto out;
	}
	for (size_t i = 0; i < TPM_KEK_BYTES; i++)
		sensitive.sensitive.data.buffer[i] = rnd->buffer[i] ^ mix[i];
	sensitive.sensitive.data.size = TPM_KEK_BYTES;

	attempt = 0;
	do
		rc = Esys_Create(t->esys, srk, session, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
				 &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Create (seal KEK)", rc);
		goto out;
	}
	r = marshal_sealed(pub, priv, ret);
	if (r < 0)
		goto out;
	memcpy(kek, sensitive.sensitive.data.buffer, TPM_KEK_BYTES);
out:
	util_wipe(&sensitive, sizeof(sensitive));
	util_wipe(mix, sizeof(mix));
	if (rnd)
		util_wipe(rnd, sizeof(*rnd));
	Esys_Free(rnd);
	Esys_Free(priv);
	Esys_Free(pub);
	srk_session_end(t, &srk, &session);
	return r;
}

int tpm_signkey_create(tpm *t, struct tpm_sealed *ret)
{
	TPM2B_SENSITIVE_CREATE sensitive = {0};
	TPM2B_PUBLIC tmpl = {
		.publicArea = {
			.type = TPM2_ALG_ECC,
			.nameAlg = TPM2_ALG_SHA256,
			.objectAttributes = TPMOBJ_SIGNKEY_ATTRIBUTES,
			.parameters.eccDetail = {
				.symmetric.algorithm = TPM2_ALG_NULL,
				.scheme = {.scheme = TPM2_ALG_ECDSA,
					   .details.ecdsa.hashAlg = TPM2_ALG_SHA256},
				.curveID = TPM2_ECC_NIST_P256,
				.kdf.scheme = TPM2_ALG_NULL,
			},
		},
	};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	TPM2B_PRIVATE *priv = NULL;
	TPM2B_PUBLIC *pub = NULL;
	ESYS_TR srk = ESYS_TR_NONE, session = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	t->last_rc = 0;
	r = srk_session_begin(t, &srk, &session);
	if (r < 0)
		goto out;
	do
		rc = Esys_Create(t->esys, srk, session, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
				 &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Create (signing key)", rc);
		goto out;
	}
	r = marshal_sealed(pub, priv, ret);
out:
	Esys_Free(priv);
	Esys_Free(pub);
	srk_session_end(t, &srk, &session);
	return r;
}

/* r || s of a TPMS_SIGNATURE_ECDSA as DER. */
static int ecdsa_der(const TPMS_SIGNATURE_ECDSA *e, uint8_t out[TPM_SIG_MAX], size_t *ret_len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *br = BN_bin2bn(e->signatureR.buffer, e->signatureR.size, NULL);
	BIGNUM *bs = BN_bin2bn(e->signatureS.buffer, e->signatureS.size, NULL);
	uint8_t *p = out;
	int n, r = -ENOMEM;

	if (!sig || !br || !bs || ECDSA_SIG_set0(sig, br, bs) != 1)
		goto out;
	br = bs = NULL; /* sig owns them */
	n = i2d_ECDSA_SIG(sig, NULL);
	r = -EOVERFLOW;
	if (n <= 0 || n > TPM_SIG_MAX)
		goto out;
	n = i2d_ECDSA_SIG(sig, &p);
	*ret_len = (size_t)n;
	r = 0;
out:
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(sig);
	return r;
}

int tpm_signkey_sign(tpm *t, const struct tpm_sealed *key, const uint8_t digest[32],
		     uint8_t sig[TPM_SIG_MAX], size_t *ret_len)
{
	TPM2B_PUBLIC pub = {0};
	TPM2B_PRIVATE priv = {0};
	TPM2B_DIGEST d = {.size = 32};
	TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA,
				  .details.ecdsa.hashAlg = TPM2_ALG_SHA256};
	/* A NULL ticket: the key is not restricted, so it signs any digest. */
	TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
	TPMT_SIGNATURE *out = NULL;
	ESYS_TR srk = ESYS_TR_NONE, session = ESYS_TR_NONE, obj = ESYS_TR_NONE;
	const char *why;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	t->last_rc = 0;
	if (tpmobj_signkey_check(key->pub, key->pub_len, &why) < 0)
		return -EINVAL;
	r = unmarshal_sealed(key, &pub, &priv);
	if (r < 0)
		return r;
	memcpy(d.buffer, digest, 32);
	r = srk_load(t, &pub, &priv, "Load (signing key)", &srk, &session, &obj);
	if (r < 0)
		goto out;
	do
		rc = Esys_Sign(t->esys, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d,
			       &scheme, &ticket, &out);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Sign", rc);
		goto out;
	}
	if (out->sigAlg != TPM2_ALG_ECDSA) {
		r = -EPROTO;
		goto out;
	}
	r = ecdsa_der(&out->signature.ecdsa, sig, ret_len);
out:
	Esys_Free(out);
	flush(t, &obj);
	srk_session_end(t, &srk, &session);
	return r;
}

/* Opens the SRK's salted session and loads an object under it (what
 * names it in a failure); the caller ends both with srk_session_end and
 * flushes *ret. */
static int srk_load(tpm *t, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
		    const char *what, ESYS_TR *srk, ESYS_TR *session, ESYS_TR *ret)
{
	ESYS_TR obj = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	r = srk_session_begin(t, srk, session);
	if (r < 0)
		return r;
	do
		rc = Esys_Load(t->esys, *srk, *session, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &obj);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, what, rc);
	*ret = obj;
	return 0;
}

/* An unsealed KEK out of ESAPI's buffer, which free_sensitive wipes. */
static int take_kek(const TPM2B_SENSITIVE_DATA *out, uint8_t kek[TPM_KEK_BYTES])
{
	if (out->size != TPM_KEK_BYTES) {
		log_error("tpm: unsealed %u bytes, expected %u", out->size, TPM_KEK_BYTES);
		return -EKEYREJECTED;
	}
	memcpy(kek, out->buffer, TPM_KEK_BYTES);
	return 0;
}

static void free_sensitive(TPM2B_SENSITIVE_DATA *out)
{
	if (out)
		util_wipe(out, sizeof(*out));
	Esys_Free(out);
}

int tpm_kek_unseal(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		   uint8_t kek[TPM_KEK_BYTES])
{
	TPM2B_PUBLIC pub = {0};
	TPM2B_PRIVATE priv = {0};
	TPM2B_SENSITIVE_DATA *out = NULL;
	ESYS_TR srk = ESYS_TR_NONE, session = ESYS_TR_NONE, obj = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	r = tpmobj_sealed_check(s, kind, NULL);
	if (r < 0)
		return r;
	r = unmarshal_sealed(s, &pub, &priv);
	if (r < 0)
		return r;
	r = srk_load(t, &pub, &priv, "Load (sealed KEK)", &srk, &session, &obj);
	if (r < 0)
		goto out;
	do
		rc = Esys_Unseal(t->esys, obj, session, ESYS_TR_NONE, ESYS_TR_NONE, &out);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Unseal (KEK)", rc);
		goto out;
	}
	r = take_kek(out, kek);
out:
	free_sensitive(out);
	flush(t, &obj);
	srk_session_end(t, &srk, &session);
	return r;
}

int tpm_srk_public(tpm *t, const struct tpm_name *pinned, uint8_t out[TPM_BLOB_MAX],
		   size_t *ret_len)
{
	TPM2B_PUBLIC *pub = NULL;
	ESYS_TR srk = ESYS_TR_NONE;
	size_t off = 0;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	r = srk_open_pinned(t, pinned, &srk);
	if (r < 0)
		return r;
	rc = Esys_ReadPublic(t->esys, srk, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL,
			     NULL);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "ReadPublic SRK", rc);
		goto out;
	}
	rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, out, TPM_BLOB_MAX, &off);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "marshal SRK public area", rc);
		goto out;
	}
	*ret_len = off;
	r = 0;
out:
	Esys_Free(pub);
	Esys_TR_Close(t->esys, &srk);
	return r;
}

/* --- the endorsement key ------------------------------------------------ */

#define EK_CHAIN_FIRST 0x01c00100u
#define EK_CHAIN_LAST  0x01c001ffu
/* NV_Read returns at most TPM2_PT_NV_BUFFER_MAX bytes; every TPM allows
 * this many. */
#define NV_CHUNK 512

/* PolicySecret(TPM_RH_ENDORSEMENT) in SHA-256: the authPolicy of the
 * low-range templates L-1 and L-2. */
static const uint8_t EK_POLICY_A_SHA256[32] = {
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
	0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
	0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};
/* PolicyB in SHA-384 (PolicyOR of PolicySecret(endorsement) and
 * PolicyAuthorizeNV): the authPolicy of the high-range template H-3.
 * Those EKs set userWithAuth, so their empty authValue serves as well,
 * which is what we use. */
static const uint8_t EK_POLICY_B_SHA384[48] = {
	0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc,
	0xf5, 0xfd, 0x3a, 0x1a, 0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4,
	0xcb, 0x1c, 0x0a, 0xd9, 0xbd, 0xe4, 0x19, 0xca, 0xcb, 0x47, 0xba, 0x09,
	0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f, 0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12,
};

#define EK_ATTRIBUTES                                                                        \
	(TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |  \
	 TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)

/* The EKs read, in order of preference (TCG EK Credential Profile 2.5):
 * the certificate's NV index, where TPM makers (and swtpm_setup) persist
 * the key, and the template its certificate certifies, from which the
 * endorsement seed makes the same key again when it is not persistent.
 * The high-range RSA EK (0x01C00012) is not read: its template's PolicyB
 * in SHA-256 could not be checked against a TPM here. */
enum ek_template { EK_L1_RSA2048, EK_L2_P256, EK_H3_P384 };
static const struct {
	uint32_t cert_index;
	uint32_t handle;
	enum ek_template tmpl;
	const char *what;
} EK_KINDS[TPM_EK_KINDS] = {
	{TPM_EK_RSA_CERT_INDEX, 0x81010001u, EK_L1_RSA2048, "RSA 2048 EK (template L-1)"},
	{0x01c0000au, 0x81010002u, EK_L2_P256, "ECC P-256 EK (template L-2)"},
	{0x01c00016u, 0x81010016u, EK_H3_P384, "ECC P-384 EK (template H-3)"},
};

uint32_t tpm_ek_cert_index(size_t k)
{
	assert(k < TPM_EK_KINDS);
	return EK_KINDS[k].cert_index;
}

static void ek_template(enum ek_template which, TPM2B_PUBLIC *ret)
{
	TPMT_PUBLIC *a = &ret->publicArea;

	memset(ret, 0, sizeof(*ret));
	a->objectAttributes = EK_ATTRIBUTES;
	if (which == EK_L1_RSA2048) {
		a->type = TPM2_ALG_RSA;
		a->nameAlg = TPM2_ALG_SHA256;
		a->parameters.rsaDetail.symmetric =
		    (TPMT_SYM_DEF_OBJECT){.algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
		                          .mode.aes = TPM2_ALG_CFB};
		a->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
		a->parameters.rsaDetail.keyBits = 2048;
		a->unique.rsa.size = 256;
	} else {
		bool h3 = which == EK_H3_P384;

		a->type = TPM2_ALG_ECC;
		a->nameAlg = h3 ? TPM2_ALG_SHA384 : TPM2_ALG_SHA256;
		if (h3)
			a->objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
		a->parameters.eccDetail.symmetric =
		    (TPMT_SYM_DEF_OBJECT){.algorithm = TPM2_ALG_AES, .keyBits.aes = h3 ? 256 : 128,
		                          .mode.aes = TPM2_ALG_CFB};
		a->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
		a->parameters.eccDetail.curveID = h3 ? TPM2_ECC_NIST_P384 : TPM2_ECC_NIST_P256;
		a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
		/* L-2 fills unique with zeros; the high range leaves it empty. */
		a->unique.ecc.x.size = h3 ? 0 : 32;
		a->unique.ecc.y.size = h3 ? 0 : 32;
	}
	if (which == EK_H3_P384) {
		a->authPolicy.size = sizeof(EK_POLICY_B_SHA384);
		memcpy(a->authPolicy.buffer, EK_POLICY_B_SHA384, sizeof(EK_POLICY_B_SHA384));
	} else {
		a->authPolicy.size = sizeof(EK_POLICY_A_SHA256);
		memcpy(a->authPolicy.buffer, EK_POLICY_A_SHA256, sizeof(EK_POLICY_A_SHA256));
	}
}

/* EK kind k made again from its template, transient (flush it). */
static int ek_create(tpm *t, size_t k, ESYS_TR *ret)
{
	TPM2B_SENSITIVE_CREATE sensitive = {0};
	TPM2B_PUBLIC tmpl;
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;

	ek_template(EK_KINDS[k].tmpl, &tmpl);
	do
		rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD,
					ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &tmpl, &outside,
					&pcrs, ret, NULL, NULL, NULL, NULL);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		log_error("tpm: cannot make the %s from its template", EK_KINDS[k].what);
		return fail(t, "CreatePrimary (EK)", rc);
	}
	return 0;
}

/* EK kind k: persistent where the TPM's maker put it, else made from its
 * template (*ret_transient: it must be flushed). */
static int ek_handle(tpm *t, size_t k, ESYS_TR *ret, bool *ret_transient)
{
	int r = tr_open(t, EK_KINDS[k].handle, "look up a persistent EK", ret);

	*ret_transient = r == -ENOENT;
	return r == -ENOENT ? ek_create(t, k, ret) : r;
}

static void ek_release(tpm *t, ESYS_TR *ek, bool transient)
{
	if (*ek == ESYS_TR_NONE)
		return;
	if (transient)
		Esys_FlushContext(t->esys, *ek);
	else
		Esys_TR_Close(t->esys, ek);
	*ek = ESYS_TR_NONE;
}

/* A DER certificate's length from its outer SEQUENCE: NV indices may be
 * larger than what they hold. */
static size_t der_length(const uint8_t *p, size_t len)
{
	size_t n, total;

	if (len < 2 || p[0] != 0x30)
		return 0;
	if (p[1] < 0x80)
		total = 2 + (size_t)p[1];
	else if (p[1] == 0x81 && len >= 3)
		total = 3 + (size_t)p[2];
	else if (p[1] == 0x82 && len >= 4)
		total = 4 + ((size_t)p[2] << 8 | p[3]);
	else
		return 0;
	n = total;
	return n <= len ? n : 0;
}

/* The whole of NV index, read in chunks, into out (max bytes). */
static int nv_read_all(tpm *t, TPM2_HANDLE index, uint8_t *out, size_t max, size_t *ret_len)
{
	TPM2B_NV_PUBLIC *pub = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	size_t size, off = 0;
	TSS2_RC rc;
	int r;

	r = tr_open(t, index, "look up an EK certificate index", &nv);
	if (r < 0)
		return r;
	rc = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "NV_ReadPublic (EK certificate)", rc);
		goto out;
	}
	size = pub->nvPublic.dataSize;
	if (size > max) {
		r = -EFBIG;
		goto out;
	}
	while (off < size) {
		TPM2B_MAX_NV_BUFFER *data = NULL;
		UINT16 n = (UINT16)(size - off < NV_CHUNK ? size - off : NV_CHUNK);

		rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
		                  (UINT16)off, &data);
		if (rc != TSS2_RC_SUCCESS) {
			r = fail(t, "NV_Read (EK certificate)", rc);
			goto out;
		}
		memcpy(out + off, data->buffer, data->size < n ? data->size : n);
		off += n;
		Esys_Free(data);
	}
	*ret_len = size;
	r = 0;
out:
	Esys_Free(pub);
	Esys_TR_Close(t->esys, &nv);
	return r;
}

static int ek_chain(tpm *t, struct tpm_ek *ek)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	TSS2_RC rc;
	int r = 0;

	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
	                        EK_CHAIN_FIRST, 64, &more, &cap);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "GetCapability (NV indices)", rc);
	for (UINT32 i = 0; i < cap->data.handles.count && ek->n_chain < TPM_EK_MAX_CHAIN; i++) {
		TPM2_HANDLE h = cap->data.handles.handle[i];
		size_t len = 0;

		if (h > EK_CHAIN_LAST)
			break;
		r = nv_read_all(t, h, ek->chain[ek->n_chain], TPM_EK_CERT_MAX, &len);
		if (r < 0)
			break;
		len = der_length(ek->chain[ek->n_chain], len);
		if (len)
			ek->chain_len[ek->n_chain++] = len;
	}
	Esys_Free(cap);
	return r;
}

static int ek_kind_of(uint32_t cert_index, size_t *ret)
{
	for (size_t k = 0; k < TPM_EK_KINDS; k++)
		if (EK_KINDS[k].cert_index == cert_index) {
			*ret = k;
			return 0;
		}
	return -EINVAL;
}

static int ek_public(tpm *t, ESYS_TR ek, TPM2B_PUBLIC **ret)
{
	TSS2_RC rc = Esys_ReadPublic(t->esys, ek, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ret,
	                             NULL, NULL);

	return rc == TSS2_RC_SUCCESS ? 0 : fail(t, "ReadPublic (EK)", rc);
}

int tpm_ek_read(tpm *t, uint32_t cert_index, struct tpm_ek *ret)
{
	struct tpm_ek *ek = calloc(1, sizeof(*ek));
	TPM2B_PUBLIC *pub = NULL;
	ESYS_TR tr = ESYS_TR_NONE;
	bool transient = false;
	size_t off = 0, len = 0, k = 0;
	int r;

	t->last_rc = 0;
	if (!ek)
		return -ENOMEM;
	r = ek_kind_of(cert_index, &k);
	if (r == 0)
		r = nv_read_all(t, cert_index, ek->cert, sizeof(ek->cert), &len);
	if (r == 0)
		r = ek_handle(t, k, &tr, &transient);
	if (r == 0)
		r = ek_public(t, tr, &pub);
	if (r < 0)
		goto out;
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, ek->pub, sizeof(ek->pub), &off) != TSS2_RC_SUCCESS) {
		r = -EPROTO;
		goto out;
	}
	ek->pub_len = off;
	ek->cert_index = cert_index;
	ek->cert_len = der_length(ek->cert, len);
	if (!ek->cert_len) {
		log_error("tpm: NV 0x%08x does not hold a DER certificate", (unsigned)cert_index);
		r = -EBADMSG;
		goto out;
	}
	r = ek_chain(t, ek);
	if (r < 0)
		goto out;
	*ret = *ek;
out:
	Esys_Free(pub);
	ek_release(t, &tr, transient);
	free(ek);
	return r;
}

const char *tpm_ek_describe(uint32_t cert_index)
{
	size_t k;

	return ek_kind_of(cert_index, &k) == 0 ? EK_KINDS[k].what : "EK";
}

/* The authorisation for one use of the EK: its empty authValue where it
 * allows that (userWithAuth, the high-range templates), else a policy
 * session that satisfies PolicySecret(TPM_RH_ENDORSEMENT) in the EK's
 * hash (the low-range templates). *ret is ESYS_TR_PASSWORD or a session
 * to flush. */
static int ek_session(tpm *t, const TPM2B_PUBLIC *ek, ESYS_TR *ret)
{
	TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
	ESYS_TR s = ESYS_TR_NONE;
	TSS2_RC rc;

	if (ek->publicArea.objectAttributes & TPMA_OBJECT_USERWITHAUTH) {
		*ret = ESYS_TR_PASSWORD;
		return 0;
	}
	rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
	                           ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
	                           ek->publicArea.nameAlg, &s);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "StartAuthSession (EK policy)", rc);
	rc = Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, s, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	                       ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		Esys_FlushContext(t->esys, s);
		return fail(t, "PolicySecret (endorsement hierarchy)", rc);
	}
	*ret = s;
	return 0;
}

static void ek_session_end(tpm *t, ESYS_TR *s)
{
	if (*s != ESYS_TR_NONE && *s != ESYS_TR_PASSWORD)
		Esys_FlushContext(t->esys, *s);
	*s = ESYS_TR_NONE;
}

/* This TPM's EK whose Name is want, with its public area: the persistent
 * ones first (one lookup each, cheap), then the others made from their
 * templates. -ENOENT when none is. */
static int ek_find(tpm *t, const struct tpm_name *want, ESYS_TR *ret, bool *ret_transient,
                   TPM2B_PUBLIC **ret_pub)
{
	bool persistent[TPM_EK_KINDS] = {false};

	for (int pass = 0; pass < 2; pass++)
		for (size_t k = 0; k < TPM_EK_KINDS; k++) {
			ESYS_TR tr = ESYS_TR_NONE;
			bool transient = pass == 1;
			struct tpm_name name;
			int r;

			if (pass == 0) {
				r = tr_open(t, EK_KINDS[k].handle, "look up a persistent EK", &tr);
				persistent[k] = r == 0;
			} else {
				r = persistent[k] ? -EEXIST : ek_create(t, k, &tr);
			}
			if (r == 0)
				r = tr_name(t, tr, &name);
			if (r == 0 && tpm_name_equal(&name, want)) {
				r = ek_public(t, tr, ret_pub);
				if (r == 0) {
					*ret = tr;
					*ret_transient = transient;
					return 0;
				}
			} else if (r == 0) {
				r = -ENOENT;
			}
			ek_release(t, &tr, transient);
			if (r != -ENOENT && r != -EEXIST)
				return r;
		}
	return -ENOENT;
}

/* The verifier's HMAC key, imported and loaded under the EK named
 * ek_name. */
static int ek_load_duplicate(tpm *t, const struct tpm_name *ek_name, const struct tpm_duplicate *d,
                             ESYS_TR *ret)
{
	TPM2B_PUBLIC pub = {0}, *ek_pub = NULL;
	TPM2B_PRIVATE dup = {0}, *priv = NULL;
	TPM2B_ENCRYPTED_SECRET seed = {0};
	TPM2B_DATA no_key = {0};
	TPMT_SYM_DEF_OBJECT no_inner = {.algorithm = TPM2_ALG_NULL};
	ESYS_TR ek = ESYS_TR_NONE, s = ESYS_TR_NONE;
	bool transient = false;
	size_t o1 = 0, o2 = 0, o3 = 0;
	TSS2_RC rc;
	int r;

	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(d->pub, d->pub_len, &o1, &pub) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(d->dup, d->dup_len, &o2, &dup) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(d->seed, d->seed_len, &o3, &seed) !=
	        TSS2_RC_SUCCESS)
		return -EINVAL;
	r = ek_find(t, ek_name, &ek, &transient, &ek_pub);
	if (r == -ENOENT)
		log_error("tpm: this TPM has no EK of the challenge's Name: it was made for "
		          "another TPM");
	if (r == 0)
		r = ek_session(t, ek_pub, &s);
	if (r < 0)
		goto out;
	rc = Esys_Import(t->esys, ek, s, ESYS_TR_NONE, ESYS_TR_NONE, &no_key, &pub, &dup, &seed,
	                 &no_inner, &priv);
	ek_session_end(t, &s);
	if (rc != TSS2_RC_SUCCESS) {
		/* Altered on the way. */
		r = fail(t, "Import (the challenge, under the EK)", rc);
		goto out;
	}
	r = ek_session(t, ek_pub, &s);
	if (r < 0)
		goto out;
	rc = Esys_Load(t->esys, ek, s, ESYS_TR_NONE, ESYS_TR_NONE, priv, &pub, ret);
	if (rc != TSS2_RC_SUCCESS)
		r = fail(t, "Load (the challenge's HMAC key)", rc);
out:
	Esys_Free(priv);
	Esys_Free(ek_pub);
	ek_session_end(t, &s);
	ek_release(t, &ek, transient);
	return r;
}

static int certify(tpm *t, ESYS_TR obj, ESYS_TR key, const uint8_t *nonce, size_t nonce_len,
                   struct tpm_certification *ret)
{
	TPM2B_DATA qualifying = {.size = (UINT16)nonce_len};
	TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_NULL};
	TPM2B_ATTEST *attest = NULL;
	TPMT_SIGNATURE *sig = NULL;
	size_t off = 0;
	TSS2_RC rc;
	int r = -EPROTO;

	if (nonce_len > sizeof(qualifying.buffer))
		return -EINVAL;
	memcpy(qualifying.buffer, nonce, nonce_len);
	rc = Esys_Certify(t->esys, obj, key, ESYS_TR_PASSWORD, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	                  &qualifying, &scheme, &attest, &sig);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Certify", rc);
		goto out;
	}
	if (sig->sigAlg != TPM2_ALG_HMAC || sig->signature.hmac.hashAlg != TPM2_ALG_SHA256 ||
	    Tss2_MU_TPM2B_ATTEST_Marshal(attest, ret->attest, sizeof(ret->attest), &off) !=
	        TSS2_RC_SUCCESS)
		goto out;
	ret->attest_len = off;
	memcpy(ret->hmac, sig->signature.hmac.digest.sha256, 32);
	r = 0;
out:
	Esys_Free(attest);
	Esys_Free(sig);
	return r;
}

int tpm_attest_answer(tpm *t, const struct tpm_name *pinned, const struct tpm_name *ek_name,
                      const struct tpm_duplicate *hmac_key,
                      const struct tpm_sealed *signkey, const uint8_t *nonce, size_t nonce_len,
                      struct tpm_certification *ret_srk, struct tpm_certification *ret_sign)
{
	TPM2B_PUBLIC pub = {0};
	TPM2B_PRIVATE priv = {0};
	ESYS_TR key = ESYS_TR_NONE, srk = ESYS_TR_NONE, session = ESYS_TR_NONE, obj = ESYS_TR_NONE;
	ESYS_TR srk2 = ESYS_TR_NONE;
	int r;

	t->last_rc = 0;
	r = unmarshal_sealed(signkey, &pub, &priv);
	if (r < 0)
		return r;
	r = ek_load_duplicate(t, ek_name, hmac_key, &key);
	if (r < 0)
		return r;
	r = srk_open_pinned(t, pinned, &srk2);
	if (r == 0)
		r = certify(t, srk2, key, nonce, nonce_len, ret_srk);
	if (r == 0)
		r = srk_load(t, &pub, &priv, "Load (signing key)", &srk, &session, &obj);
	if (r == 0)
		r = certify(t, obj, key, nonce, nonce_len, ret_sign);
	flush(t, &obj);
	srk_session_end(t, &srk, &session);
	if (srk2 != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, &srk2);
	Esys_FlushContext(t->esys, key);
	return r;
}

/* A policy command the TPM refused is a refused authorisation; transport
 * and transient failures keep their meaning. */
static int policy_fail(tpm *t, const char *what, TSS2_RC rc)
{
	int r = fail(t, what, rc);

	if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && r != -ETIMEDOUT)
		r = -EACCES;
	return r;
}

/* A public area from outside (a node file, a signer) into the TPM's form. */
static int unmarshal_public(const uint8_t *buf, size_t len, TPM2B_PUBLIC *ret)
{
	size_t off = 0;

	memset(ret, 0, sizeof(*ret));
	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, ret) != TSS2_RC_SUCCESS || off != len)
		return -EINVAL;
	return 0;
}

static int load_external(tpm *t, const TPM2B_PUBLIC *pub, ESYS_TR hierarchy, const char *what,
			 ESYS_TR *ret)
{
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;

	do
		rc = Esys_LoadExternal(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, NULL, pub,
				       hierarchy, ret);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, what, rc);
	return 0;
}

/* The TPM checks a signed approval itself: the signer is loaded in the
 * owner hierarchy (a NULL-hierarchy key yields a NULL ticket, which
 * PolicyAuthorize refuses), VerifySignature gives a ticket, and the signer
 * is flushed before the policy session needs its slots: a ticket outlives
 * the key it was made with. */
static int approval_ticket(tpm *t, const struct tpm_approval *a, TPMT_TK_VERIFIED **ret_ticket,
			   TPM2B_NAME **ret_signer)
{
	TPM2B_PUBLIC signer_pub;
	TPMT_SIGNATURE sig;
	TPM2B_DIGEST digest = {.size = 32};
	TPMT_TK_VERIFIED *ticket = NULL;
	TPM2B_NAME *name = NULL;
	ESYS_TR signer = ESYS_TR_NONE;
	uint8_t msg[32 + sizeof(a->policy_ref)];
	size_t off = 0;
	TSS2_RC rc;
	int r;

	if (a->policy_ref_len > sizeof(a->policy_ref) ||
	    unmarshal_public(a->signer_pub, a->signer_pub_len, &signer_pub) < 0 ||
	    Tss2_MU_TPMT_SIGNATURE_Unmarshal(a->signature, a->signature_len, &off, &sig) !=
		    TSS2_RC_SUCCESS ||
	    off != a->signature_len)
		return -EINVAL;
	memcpy(msg, a->approved_policy, 32);
	memcpy(msg + 32, a->policy_ref, a->policy_ref_len);
	SHA256(msg, 32 + a->policy_ref_len, digest.buffer);

	r = load_external(t, &signer_pub, ESYS_TR_RH_OWNER, "LoadExternal (signer)", &signer);
	if (r < 0)
		return r;
	rc = Esys_TR_GetName(t->esys, signer, &name);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "TR_GetName (signer)", rc);
		goto out;
	}
	rc = Esys_VerifySignature(t->esys, signer, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				  &digest, &sig, &ticket);
	if (rc != TSS2_RC_SUCCESS) {
		r = policy_fail(t, "VerifySignature (approval)", rc);
		goto out;
	}
	*ret_ticket = ticket;
	*ret_signer = name;
	ticket = NULL;
	name = NULL;
	r = 0;
out:
	Esys_Free(ticket);
	Esys_Free(name);
	Esys_FlushContext(t->esys, signer);
	return r;
}

/* PolicyAuthorize with the approval's ticket, then PolicyCommandCode:
 * both approved policies (duplication, PCR unseal) name their command
 * right after the signer's approval. */
static void pcr_selection(const uint32_t *index, size_t n, TPML_PCR_SELECTION *ret);

/* literal (may be NULL): PCRs with fixed values checked after
 * PolicyAuthorize, which resets the digest before. */
static int policy_authorize_command(tpm *t, ESYS_TR policy, const struct tpm_approval *a,
				    const TPMT_TK_VERIFIED *ticket, const TPM2B_NAME *signer,
				    const struct tpm_pcr_literal *literal, TPM2_CC command)
{
	TPM2B_DIGEST approved = {.size = 32};
	TPM2B_NONCE ref = {.size = (UINT16)a->policy_ref_len};
	TSS2_RC rc;

	memcpy(approved.buffer, a->approved_policy, 32);
	memcpy(ref.buffer, a->policy_ref, a->policy_ref_len);
	rc = Esys_PolicyAuthorize(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				  &approved, &ref, signer, ticket);
	if (rc != TSS2_RC_SUCCESS)
		return policy_fail(t, "PolicyAuthorize", rc);
	if (literal && literal->n) {
		TPM2B_DIGEST digest = {.size = 32};
		TPML_PCR_SELECTION sel;

		memcpy(digest.buffer, literal->digest, 32);
		pcr_selection(literal->index, literal->n, &sel);
		rc = Esys_PolicyPCR(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				    &digest, &sel);
		if (rc != TSS2_RC_SUCCESS)
			return policy_fail(t, "PolicyPCR (literal PCRs: not the values sealed to)",
					   rc);
	}
	rc = Esys_PolicyCommandCode(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				    command);
	if (rc != TSS2_RC_SUCCESS)
		return policy_fail(t, "PolicyCommandCode", rc);
	return 0;
}

/* PolicyOR with the kind's branch list, the last step of a policy. */
static int policy_or(tpm *t, ESYS_TR policy, const struct tpm_or_list *or)
{
	TPML_DIGEST list = {.count = (UINT32)or->n};
	TSS2_RC rc;

	if (or->n < 2 || or->n > TPM_OR_MAX)
		return -EINVAL;
	for (size_t i = 0; i < or->n; i++) {
		list.digests[i].size = 32;
		memcpy(list.digests[i].buffer, or->digest[i], 32);
	}
	rc = Esys_PolicyOR(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &list);
	if (rc != TSS2_RC_SUCCESS)
		return policy_fail(t, "PolicyOR", rc);
	return 0;
}

/* P_dup in the policy session, in the order the brief verified: select
 * the new parent, authorize (the admin's approval), command code; then
 * the PolicyOR of a dup+pcr generation. */
static int dup_policy(tpm *t, ESYS_TR policy, ESYS_TR obj, ESYS_TR parent,
                      const struct tpm_approval *approval, TPMT_TK_VERIFIED *ticket,
                      TPM2B_NAME *signer, enum tpm_kek_kind kind, const struct tpm_or_list *or)
{
	TPM2B_NAME *obj_name = NULL, *parent_name = NULL;
	TSS2_RC rc;
	int r;

	rc = Esys_TR_GetName(t->esys, obj, &obj_name);
	if (rc == TSS2_RC_SUCCESS)
		rc = Esys_TR_GetName(t->esys, parent, &parent_name);
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "TR_GetName", rc);
		goto out;
	}
	rc = Esys_PolicyDuplicationSelect(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE,
	                                  ESYS_TR_NONE, obj_name, parent_name, TPM2_NO);
	if (rc != TSS2_RC_SUCCESS) {
		r = policy_fail(t, "PolicyDuplicationSelect", rc);
		goto out;
	}
	r = policy_authorize_command(t, policy, approval, ticket, signer, NULL, TPM2_CC_Duplicate);
	if (r == 0 && kind == TPM_KEK_DUP_PCR)
		r = policy_or(t, policy, or);
out:
	Esys_Free(obj_name);
	Esys_Free(parent_name);
	return r;
}

/* What TPM2_Duplicate returned, with the object's public area, in our
 * form. */
static int marshal_duplicate(tpm *t, const struct tpm_sealed *s, const TPM2B_PRIVATE *dup,
                             const TPM2B_ENCRYPTED_SECRET *seed, struct tpm_duplicate *ret)
{
	struct tpm_duplicate d;
	size_t off = 0;
	TSS2_RC rc;

	memcpy(d.pub, s->pub, s->pub_len);
	d.pub_len = s->pub_len;
	rc = Tss2_MU_TPM2B_PRIVATE_Marshal(dup, d.dup, sizeof(d.dup), &off);
	d.dup_len = off;
	off = 0;
	if (rc == TSS2_RC_SUCCESS)
		rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(seed, d.seed, sizeof(d.seed), &off);
	d.seed_len = off;
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "marshal duplicate", rc);
	*ret = d;
	return 0;
}

/* A sealed KEK loaded for a use the admin's signature authorises
 * (duplicate, signed unseal): the signature's ticket and key Name, and the
 * object under the SRK. End it whether or not the beginning succeeded. */
struct signed_use {
	TPMT_TK_VERIFIED *ticket;
	TPM2B_NAME *signer;
	ESYS_TR srk, session, obj;
};

static int signed_use_begin(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
			    const struct tpm_approval *approval, struct signed_use *u)
{
	TPM2B_PUBLIC pub = {0};
	TPM2B_PRIVATE priv = {0};
	int r;

	*u = (struct signed_use){
		.srk = ESYS_TR_NONE, .session = ESYS_TR_NONE, .obj = ESYS_TR_NONE};
	r = tpmobj_sealed_check(s, kind, NULL);
	if (r == 0)
		r = unmarshal_sealed(s, &pub, &priv);
	/* At most two objects at a time (swtpm has three slots, and may be
	 * shared): the signer comes and goes first. */
	if (r == 0)
		r = approval_ticket(t, approval, &u->ticket, &u->signer);
	if (r == 0)
		r = srk_load(t, &pub, &priv, "Load (sealed KEK)", &u->srk, &u->session, &u->obj);
	return r;
}

static void signed_use_end(tpm *t, struct signed_use *u)
{
	Esys_Free(u->ticket);
	Esys_Free(u->signer);
	u->ticket = NULL;
	u->signer = NULL;
	flush(t, &u->obj);
	srk_session_end(t, &u->srk, &u->session);
}

int tpm_kek_duplicate(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		      const struct tpm_or_list *or, const uint8_t *new_parent_pub,
		      size_t new_parent_len, const struct tpm_approval *approval,
		      struct tpm_duplicate *ret)
{
	TPM2B_PUBLIC parent_pub;
	TPM2B_DATA no_key = {0};
	TPMT_SYM_DEF_OBJECT no_inner = {.algorithm = TPM2_ALG_NULL};
	TPM2B_DATA *key_out = NULL;
	TPM2B_PRIVATE *dup = NULL;
	TPM2B_ENCRYPTED_SECRET *seed = NULL;
	struct signed_use u;
	ESYS_TR parent = ESYS_TR_NONE, policy = ESYS_TR_NONE;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	if (!tpm_kek_duplicable(kind) || (kind == TPM_KEK_DUP_PCR && !or))
		return -EINVAL;
	r = unmarshal_public(new_parent_pub, new_parent_len, &parent_pub);
	if (r < 0)
		return r;
	r = signed_use_begin(t, s, kind, approval, &u);
	if (r < 0)
		goto out;
	/* The new parent is only a public key: the NULL hierarchy will do. */
	r = load_external(t, &parent_pub, ESYS_TR_RH_NULL, "LoadExternal (new parent)", &parent);
	if (r < 0)
		goto out;
	r = session_start(t, u.srk, TPM2_SE_POLICY, 0, &policy);
	if (r == 0)
		r = dup_policy(t, policy, u.obj, parent, approval, u.ticket, u.signer, kind, or);
	if (r < 0)
		goto out;
	rc = Esys_Duplicate(t->esys, u.obj, parent, policy, ESYS_TR_NONE, ESYS_TR_NONE, &no_key,
			    &no_inner, &key_out, &dup, &seed);
	if (rc != TSS2_RC_SUCCESS) {
		r = policy_fail(t, "Duplicate", rc);
		goto out;
	}
	r = marshal_duplicate(t, s, dup, seed, ret);
out:
	Esys_Free(key_out);
	Esys_Free(dup);
	Esys_Free(seed);
	flush(t, &policy);
	flush(t, &parent);
	signed_use_end(t, &u);
	return r;
}

static void pcr_selection(const uint32_t *index, size_t n, TPML_PCR_SELECTION *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->count = 1;
	ret->pcrSelections[0].hash = TPM2_ALG_SHA256;
	ret->pcrSelections[0].sizeofSelect = 3;
	for (size_t i = 0; i < n; i++)
		ret->pcrSelections[0].pcrSelect[index[i] / 8] |= (BYTE)(1u << (index[i] % 8));
}

int tpm_pcr_read(tpm *t, const uint32_t *index, size_t n, struct tpm_pcr_values *ret)
{
	struct tpm_pcr_values v = {.n = n};
	size_t done = 0;
	int r = 0;

	t->last_rc = 0;

	if (n == 0 || n > 24)
		return -EINVAL;
	/* PCR_Read answers at most 8 digests a call: ask for what is left. */
	while (done < n) {
		TPML_PCR_SELECTION sel, *out_sel = NULL;
		TPML_DIGEST *values = NULL;
		UINT32 counter;
		TSS2_RC rc;

		pcr_selection(index + done, n - done, &sel);
		rc = Esys_PCR_Read(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &sel, &counter,
				   &out_sel, &values);
		if (rc != TSS2_RC_SUCCESS) {
			r = fail(t, "PCR_Read", rc);
		} else if (values->count == 0) {
			r = -EPROTO;
		} else {
			for (UINT32 i = 0; i < values->count && done < n; i++, done++) {
				if (values->digests[i].size != 32) {
					r = -EPROTO;
					break;
				}
				v.index[done] = index[done];
				memcpy(v.value[done], values->digests[i].buffer, 32);
			}
		}
		Esys_Free(out_sel);
		Esys_Free(values);
		if (r < 0)
			return r;
	}
	*ret = v;
	return 0;
}

/* The epoch index as an ESYS handle (not cached: rarely used). */
static int epoch_open(tpm *t, ESYS_TR *ret)
{
	return tr_open(t, TPM_NV_EPOCH_INDEX, "look up the epoch index", ret);
}

static int epoch_policy_nv(tpm *t, ESYS_TR policy, uint64_t operand)
{
	TPM2B_OPERAND b = {.size = 8};
	ESYS_TR nv = ESYS_TR_NONE;
	TSS2_RC rc;
	int r;

	util_put_be64(b.buffer, operand);
	r = epoch_open(t, &nv);
	if (r < 0)
		return r;
	/* The index is its own read authority (authRead, empty auth). */
	rc = Esys_PolicyNV(t->esys, nv, nv, policy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			   &b, 0, TPM2_EO_UNSIGNED_LE);
	Esys_TR_Close(t->esys, &nv);
	if (rc != TSS2_RC_SUCCESS)
		return policy_fail(t, "PolicyNV (epoch: the signature was revoked?)", rc);
	return 0;
}

int tpm_kek_unseal_signed(tpm *t, const struct tpm_sealed *s, enum tpm_kek_kind kind,
			  const uint32_t *pcrs, size_t n_pcrs, const struct tpm_approval *approval,
			  const uint64_t *epoch_operand, const struct tpm_pcr_literal *literal,
			  const struct tpm_or_list *or, uint8_t kek[TPM_KEK_BYTES])
{
	TPM2B_DIGEST no_digest = {0};
	TPML_PCR_SELECTION sel;
	TPM2B_SENSITIVE_DATA *out = NULL;
	struct signed_use u;
	ESYS_TR policy = ESYS_TR_NONE;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	if (!tpm_kek_pcr_bound(kind) || n_pcrs == 0 || n_pcrs > 24)
		return -EINVAL;
	r = signed_use_begin(t, s, kind, approval, &u);
	if (r < 0)
		goto out;
	/* Salted, and encrypting what Unseal answers: the KEK does not cross
	 * the bus in clear on this path either. */
	r = session_start(t, u.srk, TPM2_SE_POLICY, TPMA_SESSION_ENCRYPT, &policy);
	if (r < 0)
		goto out;
	pcr_selection(pcrs, n_pcrs, &sel);
	/* No digest: the TPM takes the PCRs as they are now. */
	rc = Esys_PolicyPCR(t->esys, policy, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &no_digest,
			    &sel);
	if (rc != TSS2_RC_SUCCESS) {
		r = policy_fail(t, "PolicyPCR", rc);
		goto out;
	}
	if (epoch_operand) {
		r = epoch_policy_nv(t, policy, *epoch_operand);
		if (r < 0)
			goto out;
	}
	r = policy_authorize_command(t, policy, approval, u.ticket, u.signer, literal,
				     TPM2_CC_Unseal);
	if (r < 0)
		goto out;
	/* A policy of one branch is that branch: no PolicyOR. */
	if (or->n)
		r = policy_or(t, policy, or);
	if (r < 0)
		goto out;
	rc = Esys_Unseal(t->esys, u.obj, policy, ESYS_TR_NONE, ESYS_TR_NONE, &out);
	if (rc != TSS2_RC_SUCCESS) {
		r = policy_fail(t, "Unseal (KEK, policy)", rc);
		goto out;
	}
	r = take_kek(out, kek);
out:
	free_sensitive(out);
	flush(t, &policy);
	signed_use_end(t, &u);
	return r;
}

int tpm_kek_import(tpm *t, const struct tpm_duplicate *d, struct tpm_sealed *ret)
{
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE dup = {0};
	TPM2B_ENCRYPTED_SECRET seed = {0};
	TPM2B_DATA no_key = {0};
	TPMT_SYM_DEF_OBJECT no_inner = {.algorithm = TPM2_ALG_NULL};
	TPM2B_PRIVATE *priv = NULL;
	ESYS_TR srk = ESYS_TR_NONE, session = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	size_t off = 0;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	if (unmarshal_public(d->pub, d->pub_len, &pub) < 0 ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(d->dup, d->dup_len, &off, &dup) != TSS2_RC_SUCCESS ||
	    off != d->dup_len)
		return -EINVAL;
	off = 0;
	if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(d->seed, d->seed_len, &off, &seed) !=
		    TSS2_RC_SUCCESS ||
	    off != d->seed_len)
		return -EINVAL;
	r = srk_session_begin(t, &srk, &session);
	if (r < 0)
		goto out;
	do
		rc = Esys_Import(t->esys, srk, session, ESYS_TR_NONE, ESYS_TR_NONE, &no_key, &pub,
				 &dup, &seed, &no_inner, &priv);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	if (rc != TSS2_RC_SUCCESS) {
		r = fail(t, "Import", rc);
		/* The seed or the wrapper does not open with this SRK. */
		if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && r != -ETIMEDOUT)
			r = -EKEYREJECTED;
		goto out;
	}
	r = marshal_sealed(&pub, priv, ret);
out:
	Esys_Free(priv);
	srk_session_end(t, &srk, &session);
	return r;
}

static int nv_open(tpm *t, uint32_t index, ESYS_TR *ret)
{
	int r;

	if (t->nv != ESYS_TR_NONE && t->nv_index == index) {
		*ret = t->nv;
		return 0;
	}
	if (t->nv != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, &t->nv);
	t->nv = ESYS_TR_NONE;
	r = tr_open(t, index, "look up NV counter", &t->nv);
	if (r < 0)
		return r;
	t->nv_index = index;
	*ret = t->nv;
	return 0;
}

static int nv_check_shape(tpm *t, ESYS_TR nv, uint32_t index)
{
	TPM2B_NV_PUBLIC *pub = NULL;
	TPMA_NV a;
	TSS2_RC rc;
	int r = 0;

	rc = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_ReadPublic", rc);
	a = pub->nvPublic.attributes;
	if (((a & TPMA_NV_TPM2_NT_MASK) >> TPMA_NV_TPM2_NT_SHIFT) != TPM2_NT_COUNTER ||
	    pub->nvPublic.dataSize != 8 || !(a & TPMA_NV_AUTHREAD) || !(a & TPMA_NV_AUTHWRITE)) {
		log_error("tpm: NV index 0x%08x exists but is not an 8-byte counter with auth "
			  "read/write (attributes 0x%08x); choose another --nv-index",
			  (unsigned)index, (unsigned)a);
		r = -EEXIST;
	}
	Esys_Free(pub);
	return r;
}

int tpm_nv_counter_provision(tpm *t, uint32_t index)
{
	TPM2B_AUTH auth = {0};
	TPM2B_NV_PUBLIC info = {
		.nvPublic = {
			.nvIndex = index,
			.nameAlg = TPM2_ALG_SHA256,
			.attributes = TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE | TPMA_NV_NO_DA |
				      ((TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT) &
				       TPMA_NV_TPM2_NT_MASK),
			.dataSize = 8,
		},
	};
	ESYS_TR nv = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	if (index < TPM_NV_INDEX_FIRST || index > TPM_NV_INDEX_LAST)
		return -ERANGE;
	r = nv_open(t, index, &nv);
	if (r == -ENOENT) {
		do
			rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
						 ESYS_TR_NONE, ESYS_TR_NONE, &auth, &info, &nv);
		while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
		if (rc == TSS2_RC_SUCCESS) {
			log_info("tpm: defined NV counter 0x%08x", (unsigned)index);
			Esys_TR_Close(t->esys, &nv);
		} else if (rc_base(rc) != TPM2_RC_NV_DEFINED) {
			/* NV_DEFINED: another process was first. */
			return fail(t, "NV_DefineSpace (nonce counter)", rc);
		}
		r = nv_open(t, index, &nv);
	}
	if (r < 0)
		return r;
	return nv_check_shape(t, nv, index);
}

_Static_assert(TPM_NV_EPOCH_ATTRIBUTES ==
		       (TPMA_NV_OWNERWRITE | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA | TPMA_NV_WRITTEN |
			((TPM2_NT_BITS << TPMA_NV_TPM2_NT_SHIFT) & TPMA_NV_TPM2_NT_MASK)),
	       "epoch index attributes");

static int epoch_set_bits(tpm *t, uint64_t bits)
{
	ESYS_TR nv = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	r = epoch_open(t, &nv);
	if (r < 0)
		return r;
	do
		rc = Esys_NV_SetBits(t->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				     ESYS_TR_NONE, bits);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
	Esys_TR_Close(t->esys, &nv);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_SetBits (epoch)", rc);
	return 0;
}

int tpm_needs_provisioning(tpm *t, uint32_t nv_index, bool epoch, bool *ret)
{
	uint32_t handles[3] = {TPM_SRK_HANDLE, nv_index, TPM_NV_EPOCH_INDEX};
	size_t n = epoch ? 3 : 2;
	int r = 0;

	t->last_rc = 0;
	for (size_t i = 0; i < n; i++) {
		ESYS_TR tr = ESYS_TR_NONE;
		TSS2_RC rc = Esys_TR_FromTPMPublic(t->esys, handles[i], ESYS_TR_NONE, ESYS_TR_NONE,
						   ESYS_TR_NONE, &tr);

		if (rc == TSS2_RC_SUCCESS) {
			Esys_TR_Close(t->esys, &tr);
			continue;
		}
		r = fail(t, "look up what provisioning makes", rc);
		if (r == -ENOENT) {
			*ret = true;
			return 0;
		}
		return r;
	}
	*ret = false;
	return 0;
}

int tpm_epoch_provision(tpm *t)
{
	TPM2B_AUTH auth = {0};
	TPM2B_NV_PUBLIC info = {
		.nvPublic = {
			.nvIndex = TPM_NV_EPOCH_INDEX,
			.nameAlg = TPM2_ALG_SHA256,
			.attributes = TPM_NV_EPOCH_ATTRIBUTES & ~TPMA_NV_WRITTEN,
			.dataSize = 8,
		},
	};
	TPM2B_NV_PUBLIC *pub = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	unsigned attempt = 0;
	uint64_t deadline = patience();
	TSS2_RC rc;
	int r;

	t->last_rc = 0;
	r = epoch_open(t, &nv);
	if (r == -ENOENT) {
		do
			rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
						 ESYS_TR_NONE, ESYS_TR_NONE, &auth, &info, &nv);
		while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline, &attempt));
		if (rc != TSS2_RC_SUCCESS && rc_base(rc) != TPM2_RC_NV_DEFINED)
			return fail(t, "NV_DefineSpace (epoch)", rc);
		if (rc == TSS2_RC_SUCCESS) {
			log_info("tpm: defined the PCR signature epoch index 0x%08x",
				 (unsigned)TPM_NV_EPOCH_INDEX);
			Esys_TR_Close(t->esys, &nv);
		}
		r = epoch_open(t, &nv);
	}
	if (r < 0)
		return r;
	rc = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
	Esys_TR_Close(t->esys, &nv);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_ReadPublic (epoch)", rc);
	if ((pub->nvPublic.attributes & ~TPMA_NV_WRITTEN) != info.nvPublic.attributes ||
	    pub->nvPublic.dataSize != 8 || pub->nvPublic.nameAlg != TPM2_ALG_SHA256 ||
	    pub->nvPublic.authPolicy.size != 0) {
		log_error("tpm: NV index 0x%08x holds something else than the PCR signature "
			  "epoch (attributes 0x%08x)",
			  (unsigned)TPM_NV_EPOCH_INDEX, (unsigned)pub->nvPublic.attributes);
		Esys_Free(pub);
		return -EEXIST;
	}
	/* Written (epoch 0) so that its Name is the one signatures name. */
	if (!(pub->nvPublic.attributes & TPMA_NV_WRITTEN))
		r = epoch_set_bits(t, 0);
	Esys_Free(pub);
	return r;
}

int tpm_epoch_read(tpm *t, unsigned *ret_epoch)
{
	TPM2B_MAX_NV_BUFFER *data = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	uint64_t v;
	unsigned e = 0;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;
	r = epoch_open(t, &nv);
	if (r < 0)
		return r;
	rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0,
			  &data);
	Esys_TR_Close(t->esys, &nv);
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_Read (epoch)", rc);
	if (data->size != 8) {
		Esys_Free(data);
		return -EPROTO;
	}
	v = util_get_be64(data->buffer);
	Esys_Free(data);
	/* 2^k - 1 for epoch k; any other pattern counts by its highest bit. */
	while (e < TPM_EPOCH_MAX && (v >> e))
		e++;
	*ret_epoch = e;
	return 0;
}

int tpm_epoch_raise(tpm *t, unsigned epoch)
{
	t->last_rc = 0;
	if (epoch > TPM_EPOCH_MAX)
		return -ERANGE;
	return epoch_set_bits(t, epoch == 64 ? UINT64_MAX : (UINT64_C(1) << epoch) - 1);
}

static int nv_read(tpm *t, ESYS_TR nv, uint64_t deadline_us, uint64_t *ret_value)
{
	TPM2B_MAX_NV_BUFFER *data = NULL;
	unsigned attempt = 0;
	TSS2_RC rc;

	do
		rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8,
				  0, &data);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline_us, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_Read (nonce counter)", rc);
	if (data->size != 8) {
		Esys_Free(data);
		return -EPROTO;
	}
	*ret_value = util_get_be64(data->buffer);
	Esys_Free(data);
	return 0;
}

/* NV_Increment of the open counter, with its empty password. It goes to
 * the TPM through ESAPI's own SAPI context rather than Esys_NV_Increment:
 * after every increment ESAPI recomputes the index's Name (its
 * TPMA_NV_WRITTEN bit may have changed), and tss2-esys 3.2's OpenSSL backend
 * builds a fresh OpenSSL library context for every hash, some 3 million
 * instructions: most of an Encrypt's CPU and a third of its latency on
 * swtpm (docs/benchmarks.md). With password authorisation the Name is never
 * used, so nothing depends on ESAPI's copy of it. */
static TSS2_RC nv_increment(tpm *t)
{
	TSS2L_SYS_AUTH_COMMAND cmd = {.count = 1, .auths = {{.sessionHandle = TPM2_RH_PW}}};
	TSS2L_SYS_AUTH_RESPONSE rsp = {0};
	TSS2_SYS_CONTEXT *sys = NULL;
	TSS2_RC rc;

	rc = Esys_GetSysContext(t->esys, &sys);
	if (rc != TSS2_RC_SUCCESS)
		return rc;
	return Tss2_Sys_NV_Increment(sys, t->nv_index, t->nv_index, &cmd, &rsp);
}

int tpm_nv_counter_next(tpm *t, uint32_t index, uint64_t deadline_us, uint64_t *ret_value)
{
	ESYS_TR nv;
	unsigned attempt = 0;
	TSS2_RC rc;
	int r;

	t->last_rc = 0;

	r = nv_open(t, index, &nv);
	if (r < 0)
		return r;
	/* Increment first, always: after an unclean TPM shutdown a read alone
	 * may return a value already handed out. */
	do
		rc = nv_increment(t);
	while (rc != TSS2_RC_SUCCESS && retry_later(t, rc, deadline_us, &attempt));
	if (rc != TSS2_RC_SUCCESS)
		return fail(t, "NV_Increment (nonce counter)", rc);
	return nv_read(t, nv, deadline_us, ret_value);
}

int tpm_nv_counter_peek(tpm *t, uint32_t index, uint64_t *ret_value)
{
	ESYS_TR nv;
	int r;

	r = nv_open(t, index, &nv);
	if (r < 0)
		return r;
	return nv_read(t, nv, patience(), ret_value);
}

uint32_t tpm_last_error(const tpm *t)
{
	return t->last_rc;
}

bool tpm_needs_reset(const tpm *t)
{
	return t->last_rc != 0 && (t->last_rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER;
}
