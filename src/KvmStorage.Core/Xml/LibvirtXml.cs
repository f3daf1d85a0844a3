using System.Text;
using System.Xml;
using System.Xml.Linq;

namespace KvmStorage.Core.Xml;

/// <summary>
/// Reads libvirt's XML safely and writes it back byte for byte the way libvirt formats its own files:
/// the auto-generated-file header, two-space indentation, single-quoted attributes, LF line ends.
/// Elements the module does not model pass through unchanged, comments and foreign namespaces included.
/// </summary>
public static class LibvirtXml
{
    /// <summary>The most a definition file may hold; libvirt's own limit for XML files is 10 MiB.</summary>
    public const long MaxDocumentBytes = 10 * 1024 * 1024;

    /// <summary>Parses XML with DTD processing off and entity expansion impossible.</summary>
    public static XElement Parse(string text)
    {
        var settings = new XmlReaderSettings
        {
            DtdProcessing = DtdProcessing.Prohibit,
            XmlResolver = null,
            MaxCharactersInDocument = MaxDocumentBytes,
            IgnoreWhitespace = false,
            IgnoreProcessingInstructions = true,
        };
        using var stringReader = new StringReader(text);
        using var reader = XmlReader.Create(stringReader, settings);
        XDocument doc = XDocument.Load(reader, LoadOptions.None);
        XElement root = doc.Root ?? throw new XmlException("The document has no root element.");
        StripFormattingWhitespace(root);
        return root;
    }

    /// <summary>Reads a definition file, refusing one larger than <see cref="MaxDocumentBytes"/>.</summary>
    public static XElement Load(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > MaxDocumentBytes)
        {
            throw new XmlException($"The file is {info.Length} bytes, more than the {MaxDocumentBytes} bytes a libvirt definition may have.");
        }

        return Parse(File.ReadAllText(path, Encoding.UTF8));
    }

    /// <summary>libvirt's warning header, naming the virsh command that edits the object.</summary>
    public static string Header(string editCommand) =>
        "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n" +
        "OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n" +
        "  " + editCommand + "\n" +
        "or other application using the libvirt API.\n-->\n\n";

    /// <summary>Formats a whole definition file: header, then the element, then a final newline.</summary>
    public static string FormatFile(XElement root, string editCommand) => Header(editCommand) + Format(root) + "\n";

    /// <summary>Formats an element as libvirt does, without a trailing newline.</summary>
    public static string Format(XElement element)
    {
        var sb = new StringBuilder();
        WriteElement(sb, element, 0, libxml2Style: false);
        return sb.ToString();
    }

    private static void WriteElement(StringBuilder sb, XElement element, int depth, bool libxml2Style)
    {
        string indent = new(' ', depth * 2);
        sb.Append('<').Append(QualifiedName(element, element.Name));
        foreach (XAttribute attribute in element.Attributes())
        {
            // libvirt dumps <metadata> content with libxml2 (xmlNodeDump), which double-quotes attributes.
            if (libxml2Style)
            {
                sb.Append(' ').Append(AttributeName(element, attribute)).Append("=\"").Append(EscapeLibxml2Attribute(attribute.Value)).Append('"');
            }
            else
            {
                sb.Append(' ').Append(AttributeName(element, attribute)).Append("='").Append(EscapeAttribute(attribute.Value)).Append('\'');
            }
        }

        if (element.IsEmpty)
        {
            sb.Append("/>");
            return;
        }

        var nodes = element.Nodes().ToList();
        bool hasChildElements = nodes.Exists(n => n is XElement || n is XComment);
        if (!hasChildElements)
        {
            string text = element.Value;
            if (text.Length == 0 && libxml2Style)
            {
                sb.Append("/>");
                return;
            }

            if (text.Length == 0)
            {
                // libvirt writes an empty container such as a pool's <source> open and closed on two lines.
                sb.Append(">\n").Append(indent).Append("</").Append(QualifiedName(element, element.Name)).Append('>');
                return;
            }

            sb.Append('>').Append(libxml2Style ? EscapeLibxml2Text(text) : EscapeText(text)).Append("</").Append(QualifiedName(element, element.Name)).Append('>');
            return;
        }

        sb.Append('>');
        foreach (XNode node in nodes)
        {
            switch (node)
            {
                case XElement child:
                    sb.Append('\n').Append(indent).Append("  ");
                    WriteElement(sb, child, depth + 1, libxml2Style || IsMetadata(element));
                    break;
                case XComment comment:
                    sb.Append('\n').Append(indent).Append("  <!--").Append(comment.Value).Append("-->");
                    break;
                case XText text when !string.IsNullOrWhiteSpace(text.Value):
                    // Mixed content is rare in libvirt XML; keep the words, drop layout whitespace.
                    sb.Append('\n').Append(indent).Append("  ").Append(EscapeText(text.Value.Trim()));
                    break;
            }
        }

        sb.Append('\n').Append(indent).Append("</").Append(QualifiedName(element, element.Name)).Append('>');
    }

    private static string QualifiedName(XElement context, XName name)
    {
        if (name.Namespace == XNamespace.None)
        {
            return name.LocalName;
        }

        string? prefix = context.GetPrefixOfNamespace(name.Namespace);
        return string.IsNullOrEmpty(prefix) ? name.LocalName : prefix + ":" + name.LocalName;
    }

    private static string AttributeName(XElement context, XAttribute attribute)
    {
        if (attribute.IsNamespaceDeclaration)
        {
            return attribute.Name.Namespace == XNamespace.None ? "xmlns" : "xmlns:" + attribute.Name.LocalName;
        }

        if (attribute.Name.Namespace == XNamespace.None)
        {
            return attribute.Name.LocalName;
        }

        if (attribute.Name.Namespace == XNamespace.Xml)
        {
            return "xml:" + attribute.Name.LocalName;
        }

        string? prefix = context.GetPrefixOfNamespace(attribute.Name.Namespace);
        return string.IsNullOrEmpty(prefix) ? attribute.Name.LocalName : prefix + ":" + attribute.Name.LocalName;
    }

    private static string EscapeMarkup(string value) =>
        value.Replace("&", "&amp;", StringComparison.Ordinal)
             .Replace("<", "&lt;", StringComparison.Ordinal)
             .Replace(">", "&gt;", StringComparison.Ordinal);

    // libvirt's virBufferEscapeString escapes both quote characters in element text too
    // (observed: <description>Front-end &quot;web&quot; tier</description> in a domain file written by libvirtd 9.0).
    private static string EscapeText(string value) =>
        EscapeMarkup(value)
             .Replace("'", "&apos;", StringComparison.Ordinal)
             .Replace("\"", "&quot;", StringComparison.Ordinal);

    // libxml2's serializer (used by libvirt for <metadata>): markup in text, plus quotes and control characters in attributes.
    private static string EscapeLibxml2Text(string value) =>
        EscapeMarkup(value).Replace("\r", "&#13;", StringComparison.Ordinal);

    private static string EscapeLibxml2Attribute(string value) =>
        EscapeMarkup(value)
             .Replace("\"", "&quot;", StringComparison.Ordinal)
             .Replace("\n", "&#10;", StringComparison.Ordinal)
             .Replace("\r", "&#13;", StringComparison.Ordinal)
             .Replace("\t", "&#9;", StringComparison.Ordinal);

    /// <summary>The <c>&lt;metadata&gt;</c> child of a root element, whose content libvirt writes through libxml2.</summary>
    private static bool IsMetadata(XElement element) =>
        element.Name == "metadata" && element.Parent is not null && element.Parent.Parent is null;

    private static string EscapeAttribute(string value) =>
        EscapeText(value)
             .Replace("\n", "&#10;", StringComparison.Ordinal)
             .Replace("\r", "&#13;", StringComparison.Ordinal)
             .Replace("\t", "&#9;", StringComparison.Ordinal);

    /// <summary>
    /// Drops whitespace-only text between elements (layout), but marks containers that held only
    /// whitespace as non-empty, so <c>&lt;source&gt;\n  &lt;/source&gt;</c> is written back the same way.
    /// </summary>
    private static void StripFormattingWhitespace(XElement element)
    {
        foreach (XElement child in element.Elements().ToList())
        {
            StripFormattingWhitespace(child);
        }

        var texts = element.Nodes().OfType<XText>().ToList();
        bool hasElements = element.Elements().Any() || element.Nodes().OfType<XComment>().Any();
        if (!hasElements && texts.Count > 0 && texts.TrueForAll(t => string.IsNullOrWhiteSpace(t.Value)))
        {
            // A container written open-and-closed: keep it non-empty.
            element.Value = string.Empty;
            return;
        }

        if (hasElements)
        {
            foreach (XText text in texts.Where(t => string.IsNullOrWhiteSpace(t.Value)))
            {
                text.Remove();
            }
        }
    }
}
