#include "config.h"

#include "base/vmgenid.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool under_hypervisor(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (strncmp(line, "flags", 5) == 0 && strstr(line, " hypervisor"))
			found = true;
	fclose(f);
	return found;
}

/* The Linux vmgenid driver binds ACPI devices named like "QEMUVGID:00"
 * (QEMU), "VMGENCTR" or "VM_GEN_COUNTER" style ids (Hyper-V, VMware). */
static bool genid_bound(void)
{
	DIR *d = opendir("/sys/bus/acpi/drivers/vmgenid");
	struct dirent *e;
	bool found = false;

	if (!d)
		return false;
	while (!found && (e = readdir(d)))
		if (strchr(e->d_name, ':'))
			found = true;
	closedir(d);
	return found;
}

enum vmgenid_state vmgenid_probe(void)
{
	if (!under_hypervisor())
		return VMGENID_NOT_A_VM;
	return genid_bound() ? VMGENID_PRESENT : VMGENID_MISSING;
}
