"""A QEMU guest's serial console, read line by line as it comes."""

import queue
import threading


def read_lines(stream, log_path):
    """A queue of the stream's lines (decoded, without line ends; None once
    it ends), each also appended to log_path. Reads in a daemon thread."""
    lines = queue.Queue()

    def reader():
        with open(log_path, 'w') as log:
            for raw in stream:
                line = raw.decode('utf-8', 'replace').rstrip('\r\n')
                log.write(line + '\n')
                log.flush()
                lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    return lines
