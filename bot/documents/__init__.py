"""Documents: files shared in a workspace's sessions, read into its memory (docs/documents.md).

extract          a file's bytes → its text in sections that keep their place (pure)
extract_worker   extract, in a process of its own with limits on memory and time
store            the documents table: what was shared, its reading's state
media            a file's bytes from the homeserver (authenticated media, decrypted)
reader           the background reading: download, extract, embed, store; notices
links            the text of a web page a message links to (memory.fetch_links)
commands         !docs
"""
