/* Whole files, written atomically and read bounded: the state directory's
 * files, and those named on the command line (node files, approvals,
 * bundles, -o outputs). Every function logs what went wrong with which
 * path. Must not: know what the files mean. */
#ifndef TPM2KMS_FILES_H
#define TPM2KMS_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* dir/name written atomically: a temp file, (durable: fsync), rename,
 * (durable: fsync of dir). With mode, whatever the umask; run as root with
 * owner_of given, the file is given to owner_of's owner (root administering
 * a service user's directory must not leave it files it cannot read). */
int files_write_atomic(const char *dir, const char *name, const void *data, size_t len,
		       bool durable, const char *owner_of, mode_t mode);
/* The same for an output file named on the command line (-o), owned by
 * whoever runs the command. An existing device or pipe is written to as it
 * is. */
int files_write_output(const char *path, const void *data, size_t len, mode_t mode);

/* A whole regular file of at most max bytes, NUL-terminated (a FIFO is
 * refused, never waited on); nofollow: a symbolic link is not followed. */
int files_read(const char *path, bool nofollow, size_t max, char **ret, size_t *ret_len);
/* An input file named on the command line (node, approval, bundle), what
 * it is in messages ("approval"); logs every failure, a missing file as
 * "approval PATH: no such file". */
int files_read_input(const char *what, const char *path, size_t max, char **ret,
		     size_t *ret_len);
/* A parser of a whole input text into ret, saying why it refuses one. */
typedef int files_parser(const char *text, size_t len, void *ret, const char **ret_why);
/* An input file read (files_read_input) and parsed; logs "WHAT PATH: WHY"
 * when parse refuses it. ret_text, when not NULL, takes the text. */
int files_parse_input(const char *what, const char *path, size_t max, files_parser *parse,
		      void *ret, char **ret_text, size_t *ret_len);
/* A file found in a directory others write to (PCR signatures). */
int files_read_nofollow(const char *path, size_t max, char **ret, size_t *ret_len);

/* Run as root: gives fd to the owner of dir when that is another user. */
int files_give_to_owner(const char *dir, int fd);

/* Why path cannot be read by this process, for an error message: owner,
 * mode and what to change (out: "" when it can be). */
void files_describe_access(const char *path, char *out, size_t size);

#endif
