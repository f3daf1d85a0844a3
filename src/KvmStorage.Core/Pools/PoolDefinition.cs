using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Pools;

/// <summary>
/// A storage pool definition: a typed view over libvirt's <c>&lt;pool&gt;</c> XML. Reading and editing touch
/// only the elements named here; everything else in the element is kept as it was.
/// </summary>
public sealed class PoolDefinition
{
    private static readonly string[] PoolChildOrder = ["name", "uuid", "capacity", "allocation", "available", "features", "source", "target"];
    private static readonly string[] SourceChildOrder = ["host", "device", "dir", "adapter", "name", "format", "protocol", "auth", "vendor", "product", "initiator"];
    private static readonly string[] TargetChildOrder = ["path", "permissions"];
    private static readonly string[] PermissionChildOrder = ["mode", "owner", "group", "label"];

    private PoolDefinition(XElement element) => Element = element;

    /// <summary>The underlying XML, which stays the single source of truth.</summary>
    public XElement Element { get; }

    public PoolType Type => PoolTypes.TryParse((string?)Element.Attribute("type"), out PoolType type)
        ? type
        : throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"Unknown pool type '{(string?)Element.Attribute("type")}'.");

    public string Name
    {
        get => Element.Element("name")?.Value ?? string.Empty;
        set => SetChild(Element, "name", PoolChildOrder).Value = value;
    }

    public Guid? Uuid
    {
        get => Guid.TryParse(Element.Element("uuid")?.Value, out Guid uuid) ? uuid : null;
        set
        {
            if (value is null)
            {
                Element.Element("uuid")?.Remove();
            }
            else
            {
                SetChild(Element, "uuid", PoolChildOrder).Value = value.Value.ToString("D");
            }
        }
    }

    /// <summary>The target path as the host sees it (absolute), or null for types without a target.</summary>
    public string? TargetPath
    {
        get => Element.Element("target")?.Element("path")?.Value;
        set
        {
            XElement target = SetChild(Element, "target", PoolChildOrder);
            if (value is null)
            {
                target.Element("path")?.Remove();
            }
            else
            {
                SetChild(target, "path", TargetChildOrder).Value = value;
            }
        }
    }

    public Permissions Permissions
    {
        get
        {
            XElement? p = Element.Element("target")?.Element("permissions");
            if (p is null)
            {
                return Permissions.None;
            }

            UnixFileMode? mode = Permissions.TryParseMode(p.Element("mode")?.Value, out UnixFileMode m) ? m : null;
            return new Permissions(mode, ParseId(p.Element("owner")?.Value), ParseId(p.Element("group")?.Value), p.Element("label")?.Value);
        }

        set
        {
            XElement target = SetChild(Element, "target", PoolChildOrder);
            if (value == Permissions.None)
            {
                target.Element("permissions")?.Remove();
                return;
            }

            XElement p = SetChild(target, "permissions", TargetChildOrder);
            SetOptional(p, "mode", value.Mode is null ? null : Permissions.FormatMode(value.Mode.Value));
            SetOptional(p, "owner", value.Owner?.ToString(CultureInfo.InvariantCulture));
            SetOptional(p, "group", value.Group?.ToString(CultureInfo.InvariantCulture));
            SetOptional(p, "label", value.Label);
        }
    }

    public PoolSource Source
    {
        get
        {
            XElement? s = Element.Element("source");
            if (s is null)
            {
                return new PoolSource();
            }

            XElement? auth = s.Element("auth");
            XElement? secret = auth?.Element("secret");
            return new PoolSource
            {
                Hosts = s.Elements("host").Select(h => new PoolSourceHost((string?)h.Attribute("name") ?? string.Empty, ParseId((string?)h.Attribute("port")))).ToList(),
                Devices = s.Elements("device").Select(d => (string?)d.Attribute("path") ?? string.Empty).ToList(),
                Directory = (string?)s.Element("dir")?.Attribute("path"),
                Name = s.Element("name")?.Value,
                Format = (string?)s.Element("format")?.Attribute("type"),
                AdapterName = (string?)s.Element("adapter")?.Attribute("name"),
                InitiatorIqn = (string?)s.Element("initiator")?.Element("iqn")?.Attribute("name"),
                ProtocolVersion = ParseId((string?)s.Element("protocol")?.Attribute("ver")),
                Auth = auth is null ? null : new PoolSourceAuth(
                    (string?)auth.Attribute("type") ?? string.Empty,
                    (string?)auth.Attribute("username") ?? string.Empty,
                    (string?)secret?.Attribute("uuid"),
                    (string?)secret?.Attribute("usage")),
            };
        }
    }

    /// <summary>Parses a pool definition; throws InvalidData for anything that is not a usable <c>&lt;pool&gt;</c>.</summary>
    public static PoolDefinition FromXml(XElement element, string? origin = null)
    {
        string where = origin is null ? string.Empty : $" in '{origin}'";
        if (element.Name != "pool")
        {
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"The root element{where} is <{element.Name.LocalName}>, not <pool>.", origin);
        }

        var definition = new PoolDefinition(element);
        if (!PoolTypes.TryParse((string?)element.Attribute("type"), out _))
        {
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"The pool{where} has an unknown type '{(string?)element.Attribute("type")}'.", origin);
        }

        if (string.IsNullOrEmpty(definition.Name))
        {
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"The pool{where} has no <name>.", origin);
        }

        return definition;
    }

    /// <summary>Starts a new definition of the given type, with elements in libvirt's order.</summary>
    public static PoolDefinition Create(PoolType type, string name, Guid uuid)
    {
        var element = new XElement("pool", new XAttribute("type", type.ToXmlName()));
        var definition = new PoolDefinition(element)
        {
            Name = name,
            Uuid = uuid,
        };

        // The persistent file always carries zero sizes (libvirt fills them in only for running pools).
        foreach (string size in new[] { "capacity", "allocation", "available" })
        {
            element.Add(new XElement(size, new XAttribute("unit", "bytes"), "0"));
        }

        // An empty <source> is written open and closed, as libvirt does.
        element.Add(new XElement("source", string.Empty));
        return definition;
    }

    public void AddSourceHost(string host, int? port)
    {
        var e = new XElement("host", new XAttribute("name", host));
        if (port is not null)
        {
            e.Add(new XAttribute("port", port.Value.ToString(CultureInfo.InvariantCulture)));
        }

        AddSourceChild(e);
    }

    public void AddSourceDevice(string path) => AddSourceChild(new XElement("device", new XAttribute("path", path)));

    public void SetSourceDirectory(string path) => AddSourceChild(new XElement("dir", new XAttribute("path", path)));

    public void SetSourceName(string name) => AddSourceChild(new XElement("name", name));

    public void SetSourceFormat(string format) => AddSourceChild(new XElement("format", new XAttribute("type", format)));

    public void SetSourceProtocolVersion(int version) => AddSourceChild(new XElement("protocol", new XAttribute("ver", version.ToString(CultureInfo.InvariantCulture))));

    public void SetSourceAuth(string type, string username, string? secretUuid, string? secretUsage)
    {
        var secret = new XElement("secret");
        if (secretUuid is not null)
        {
            secret.Add(new XAttribute("uuid", secretUuid));
        }

        if (secretUsage is not null)
        {
            secret.Add(new XAttribute("usage", secretUsage));
        }

        AddSourceChild(new XElement("auth", new XAttribute("type", type), new XAttribute("username", username), secret));
    }

    public PoolDefinition Clone() => new(new XElement(Element));

    private void AddSourceChild(XElement child)
    {
        XElement source = SetChild(Element, "source", PoolChildOrder);
        if (!source.HasElements)
        {
            source.RemoveNodes();
        }

        // Repeatable children (host, device) go after their siblings of the same name.
        InsertInOrder(source, child, SourceChildOrder, replace: child.Name.LocalName is not ("host" or "device"));
    }

    private static int? ParseId(string? text) => int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) ? v : null;

    private static void SetOptional(XElement parent, string name, string? value)
    {
        if (value is null)
        {
            parent.Element(name)?.Remove();
        }
        else
        {
            SetChild(parent, name, PermissionChildOrder).Value = value;
        }
    }

    /// <summary>Returns the named child, creating it at its place in libvirt's order when absent.</summary>
    private static XElement SetChild(XElement parent, string name, string[] order)
    {
        XElement? existing = parent.Element(name);
        if (existing is not null)
        {
            return existing;
        }

        var created = new XElement(name);
        InsertInOrder(parent, created, order, replace: false);
        return created;
    }

    private static void InsertInOrder(XElement parent, XElement child, string[] order, bool replace)
    {
        if (replace)
        {
            parent.Element(child.Name)?.Remove();
        }

        int rank = Array.IndexOf(order, child.Name.LocalName);
        XElement? before = parent.Elements().FirstOrDefault(e =>
        {
            int r = Array.IndexOf(order, e.Name.LocalName);
            return r > rank;
        });
        if (before is null)
        {
            parent.Add(child);
        }
        else
        {
            before.AddBeforeSelf(child);
        }
    }
}
