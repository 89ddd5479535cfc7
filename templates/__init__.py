"""The Jinja2 templates of campaign-dispatch's own documents, installed as the package ``dispatch_templates``.

fax/    the fax cover page, as drawing instructions
email/  the HTML document around an email's paragraphs
copy/   the copy of the letter emailed to a supporter

dispatcher/domain/rendering/templates.py loads them; ``*.html.j2`` templates escape what they insert.
"""
