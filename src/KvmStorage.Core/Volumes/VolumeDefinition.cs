using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Images;

namespace KvmStorage.Core.Volumes;

/// <summary>
/// A storage volume definition: a typed view over libvirt's <c>&lt;volume&gt;</c> XML (libvirt's "Storage volume XML",
/// formatstorage.html). Reading touches only the elements named here; everything else in the element is kept as it was.
/// </summary>
public sealed class VolumeDefinition
{
    private VolumeDefinition(XElement element) => Element = element;

    /// <summary>The underlying XML, which stays the single source of truth.</summary>
    public XElement Element { get; }

    public string Name => Element.Element("name")?.Value ?? string.Empty;

    /// <summary><c>&lt;capacity&gt;</c>: the virtual size in bytes (0 when absent or unreadable).</summary>
    public ulong Capacity => Bytes(Element.Element("capacity"));

    /// <summary><c>&lt;allocation&gt;</c>: the bytes allocated on the host.</summary>
    public ulong Allocation => Bytes(Element.Element("allocation"));

    /// <summary><c>&lt;physical&gt;</c>: the file's length, which libvirt writes only for some volumes; null when absent.</summary>
    public ulong? Physical => Element.Element("physical") is { } physical ? Bytes(physical) : null;

    /// <summary><c>&lt;target&gt;&lt;path&gt;</c>: where the volume is on its host.</summary>
    public string? TargetPath => (string?)Target?.Element("path");

    /// <summary><c>&lt;target&gt;&lt;format type&gt;</c>: qemu-img's name of the format, as libvirt writes it.</summary>
    public string? Format => (string?)Target?.Element("format")?.Attribute("type");

    /// <summary><c>&lt;target&gt;&lt;compat&gt;</c>: a qcow2 image's compatibility level.</summary>
    public string? Compat => (string?)Target?.Element("compat");

    /// <summary><c>&lt;backingStore&gt;&lt;path&gt;</c>, or null for a standalone image.</summary>
    public string? BackingPath => (string?)BackingStore?.Element("path");

    /// <summary><c>&lt;backingStore&gt;&lt;format type&gt;</c>.</summary>
    public string? BackingFormat => (string?)BackingStore?.Element("format")?.Attribute("type");

    private XElement? Target => Element.Element("target");

    private XElement? BackingStore => Element.Element("backingStore");

    /// <summary>A definition as libvirt gave it (<c>virStorageVolGetXMLDesc</c>).</summary>
    public static VolumeDefinition FromXml(XElement element)
    {
        ArgumentNullException.ThrowIfNull(element);
        return new VolumeDefinition(element);
    }

    /// <summary>
    /// A new volume for <c>virStorageVolCreateXML</c>, with elements in libvirt's order: name, capacity (bytes; empty when
    /// <paramref name="capacity"/> is null, so the size comes from the backing image), the target format (and the
    /// compatibility level of a qcow2), then the backing image.
    /// </summary>
    public static VolumeDefinition Create(string name, ulong? capacity, ImageFormat format, string compat, string? backingPath, ImageFormat? backingFormat)
    {
        var target = new XElement("target", new XElement("format", new XAttribute("type", format.ToQemuName())));
        if (format == ImageFormat.Qcow2)
        {
            target.Add(new XElement("compat", compat));
        }

        var element = new XElement(
            "volume",
            new XElement("name", name),
            new XElement("capacity", new XAttribute("unit", "bytes"), capacity),
            target);
        if (backingPath is not null)
        {
            var backing = new XElement("backingStore", new XElement("path", backingPath));
            if (backingFormat is { } backingType)
            {
                backing.Add(new XElement("format", new XAttribute("type", backingType.ToQemuName())));
            }

            element.Add(backing);
        }

        return new VolumeDefinition(element);
    }

    /// <summary>The XML on one line, as libvirt's calls take it.</summary>
    public string ToXml() => Element.ToString(SaveOptions.DisableFormatting);

    /// <summary>A size element in bytes; libvirt reports volumes in bytes, but a unit is honoured anyway.</summary>
    private static ulong Bytes(XElement? element)
    {
        if (element is null || !ulong.TryParse(element.Value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
        {
            return 0;
        }

        return ((string?)element.Attribute("unit")) switch
        {
            null or "bytes" or "B" or "b" => value,
            "KiB" or "K" or "k" => value * 1024,
            "MiB" or "M" => value * 1024 * 1024,
            "GiB" or "G" => value * 1024 * 1024 * 1024,
            _ => value,
        };
    }
}
