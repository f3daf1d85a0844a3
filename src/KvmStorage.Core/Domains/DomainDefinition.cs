using System.Globalization;
using System.Xml;
using System.Xml.Linq;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Domains;

/// <summary>
/// A domain's persistent definition, kept as the original element: reading exposes names, disks and controllers,
/// editing (through <see cref="DomainDiskEditor"/>) touches only the disk and controller elements involved, so
/// addresses, foreign-namespace metadata and comments stay exactly where they were.
/// </summary>
public sealed class DomainDefinition
{
    public DomainDefinition(XElement element, string? sourceFile = null)
    {
        ArgumentNullException.ThrowIfNull(element);
        if (element.Name != "domain")
        {
            throw new KvmStorageException(
                ErrorKind.InvalidData,
                DomainErrorIds.NotADomainDefinition,
                $"{Describe(sourceFile)} holds a <{element.Name.LocalName}> element, not a <domain>.",
                sourceFile);
        }

        Element = element;
        SourceFile = sourceFile;
    }

    /// <summary>The <c>&lt;domain&gt;</c> element itself; edits to it are what <see cref="DomainStore.Save"/> writes.</summary>
    public XElement Element { get; }

    /// <summary>The file it was read from, if any.</summary>
    public string? SourceFile { get; }

    public string Name => Element.Element("name")?.Value ?? string.Empty;

    public string? Uuid => Element.Element("uuid")?.Value;

    /// <summary>The hypervisor type attribute: kvm, qemu, …</summary>
    public string? HypervisorType => (string?)Element.Attribute("type");

    /// <summary><c>&lt;os&gt;&lt;type machine=…&gt;</c>, e.g. pc-i440fx-7.2 or pc-q35-7.2.</summary>
    public string? MachineType => (string?)Element.Element("os")?.Element("type")?.Attribute("machine");

    /// <summary>True when <c>&lt;os&gt;</c> has <c>&lt;boot dev=…/&gt;</c>, which rules out per-device boot order.</summary>
    public bool HasOsBootDevices => Element.Element("os")?.Elements("boot").Any() ?? false;

    public IReadOnlyList<DomainDisk> Disks => DiskElements.Select(ReadDisk).ToList();

    public IReadOnlyList<DomainController> Controllers =>
        (Devices?.Elements("controller") ?? [])
            .Select(c => new DomainController(
                (string?)c.Attribute("type") ?? string.Empty,
                int.TryParse((string?)c.Attribute("index"), NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? index : null,
                (string?)c.Attribute("model")))
            .ToList();

    internal XElement? Devices => Element.Element("devices");

    internal IEnumerable<XElement> DiskElements => Devices?.Elements("disk") ?? [];

    /// <summary>Reads a definition from XML text (DTDs refused).</summary>
    public static DomainDefinition Parse(string xml)
    {
        XElement root;
        try
        {
            root = LibvirtXml.Parse(xml);
        }
        catch (XmlException e)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, DomainErrorIds.DomainFileMalformed, $"The domain XML is malformed: {e.Message}", null, e);
        }

        return new DomainDefinition(root);
    }

    /// <summary>Reads a definition file; malformed XML and non-domain roots are typed errors naming the file.</summary>
    public static DomainDefinition Load(string path)
    {
        XElement root;
        try
        {
            root = LibvirtXml.Load(path);
        }
        catch (XmlException e)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, DomainErrorIds.DomainFileMalformed, $"The domain file '{path}' is not well-formed XML: {e.Message}", path, e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, DomainErrorIds.DomainFileUnreadable, $"Cannot read the domain file '{path}': {e.Message}", path, e);
        }
        catch (IOException e)
        {
            throw new KvmStorageException(ErrorKind.ResourceUnavailable, DomainErrorIds.DomainFileUnreadable, $"Cannot read the domain file '{path}': {e.Message}", path, e);
        }

        return new DomainDefinition(root, path);
    }

    /// <summary>The whole file as libvirt keeps it: warning header naming <c>virsh edit NAME</c>, then the element.</summary>
    public string ToFileText() => LibvirtXml.FormatFile(Element, "virsh edit " + Name);

    /// <summary>The disk with this target, or null.</summary>
    public DomainDisk? FindDisk(string target) =>
        DiskElements.Where(d => TargetOf(d) == target).Select(ReadDisk).FirstOrDefault();

    internal XElement? FindDiskElement(string target) => DiskElements.FirstOrDefault(d => TargetOf(d) == target);

    internal static string? TargetOf(XElement disk) => (string?)disk.Element("target")?.Attribute("dev");

    internal DomainDisk ReadDisk(XElement disk)
    {
        string type = (string?)disk.Attribute("type") ?? "file";
        string device = (string?)disk.Attribute("device") ?? "disk";
        XElement? source = disk.Element("source");
        XElement? driver = disk.Element("driver");
        XElement? target = disk.Element("target");
        string? path = type switch
        {
            "file" => (string?)source?.Attribute("file"),
            "block" => (string?)source?.Attribute("dev"),
            "dir" => (string?)source?.Attribute("dir"),
            _ => null,
        };
        int? bootOrder = int.TryParse((string?)disk.Element("boot")?.Attribute("order"), NumberStyles.None, CultureInfo.InvariantCulture, out int order) ? order : null;
        bool removable = device is "cdrom" or "floppy";
        return new DomainDisk
        {
            VMName = Name,
            Target = (string?)target?.Attribute("dev") ?? string.Empty,
            Bus = (string?)target?.Attribute("bus"),
            Device = device,
            Type = type,
            SourcePath = string.IsNullOrEmpty(path) ? null : path,
            SourcePool = type == "volume" ? (string?)source?.Attribute("pool") : null,
            SourceVolume = type == "volume" ? (string?)source?.Attribute("volume") : null,
            Format = (string?)driver?.Attribute("type"),
            Settings = new DiskSettings
            {
                Cache = (string?)driver?.Attribute("cache"),
                Io = (string?)driver?.Attribute("io"),
                Discard = (string?)driver?.Attribute("discard"),
                ReadOnly = disk.Element("readonly") is not null,
                Shareable = disk.Element("shareable") is not null,
                Serial = disk.Element("serial")?.Value,
                BootOrder = bootOrder,
            },
            IsEmpty = removable && (source is null || !source.Attributes().Any(a => a.Name.LocalName is "file" or "dev" or "volume" or "name" or "dir")),
        };
    }

    private static string Describe(string? file) => file is null ? "The XML" : $"The file '{file}'";
}
