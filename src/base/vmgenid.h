/* Is this a virtual machine whose kernel learns of snapshot restores?
 * The per-message salt is only fresh in a restored VM when the kernel
 * reseeds its generator on a VM generation change (docs/security.md).
 * Must not: change behaviour, only say what it found. */
#ifndef TPM2KMS_VMGENID_H
#define TPM2KMS_VMGENID_H

enum vmgenid_state {
	VMGENID_NOT_A_VM,    /* no hypervisor flag in /proc/cpuinfo */
	VMGENID_PRESENT,     /* a VM generation ID device is bound */
	VMGENID_MISSING,     /* a VM without one */
};

enum vmgenid_state vmgenid_probe(void);

#endif
