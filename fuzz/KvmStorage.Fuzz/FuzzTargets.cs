using System.Xml;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Xml;

namespace KvmStorage.Fuzz;

/// <summary>
/// One fuzz target per parser. A target feeds the input to the parser and swallows only the typed errors the
/// parser promises (KvmStorageException; XmlException where the caller maps it to one); anything else escapes and
/// is a finding. Shared by the AFL++ harness (Program.cs) and the xunit corpus replay (linked into the tests).
/// To add a parser: one more entry in <see cref="All"/> and a folder fuzz/corpus/&lt;name&gt;/ with seeds.
/// </summary>
public static class FuzzTargets
{
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>(StringComparer.Ordinal)
    {
        ["qcow2"] = data => InspectImage(data, ImageFormat.Qcow2),
        ["vmdk"] = data => InspectImage(data, ImageFormat.Vmdk),
        ["vdi"] = data => InspectImage(data, ImageFormat.Vdi),
        ["vhd"] = data => InspectImage(data, ImageFormat.Vpc),
        ["vhdx"] = data => InspectImage(data, ImageFormat.Vhdx),
        ["probe"] = data => InspectImage(data, null),
        ["pool-xml"] = ParsePool,
        ["domain-xml"] = ParseDomain,
    };

    private static readonly Lazy<string> Sandbox = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "kvmstorage-fuzz-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        return dir;
    });

    /// <summary>Writes the input as an image file and reads it as <paramref name="format"/> (null: detected).</summary>
    public static void InspectImage(byte[] data, ImageFormat? format)
    {
        ArgumentNullException.ThrowIfNull(data);
        string file = Path.Combine(Sandbox.Value, "image");
        File.WriteAllBytes(file, data);
        try
        {
            // Backing names resolve inside the sandbox: a fuzzed name must not make the target read /dev/stdin.
            ImageInfo info = ImageInspector.Inspect(file, new ImageInspectOptions
            {
                Format = format,
                ForceShare = true,
                ResolveBackingChain = false,
                HostPathResolver = p => Path.Combine(Sandbox.Value, "host", p.TrimStart('/')),
            });
            _ = info.VirtualSize + info.ActualSize;
        }
        catch (KvmStorageException)
        {
        }
    }

    public static void ParsePool(byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        string text = System.Text.Encoding.UTF8.GetString(data);
        try
        {
            // What OfflinePoolStore does with a file, minus the file (it maps XmlException to InvalidPoolDefinition).
            PoolDefinition pool = PoolDefinition.FromXml(LibvirtXml.Parse(text));
            _ = (pool.Name, pool.Type, pool.Uuid, pool.TargetPath, pool.Permissions, pool.Source);
            _ = LibvirtXml.FormatFile(pool.Element, "virsh pool-edit x");
        }
        catch (KvmStorageException)
        {
        }
        catch (XmlException)
        {
        }
    }

    public static void ParseDomain(byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        string text = System.Text.Encoding.UTF8.GetString(data);
        try
        {
            DomainDefinition domain = DomainDefinition.Parse(text);
            _ = (domain.Name, domain.Uuid, domain.MachineType, domain.HasOsBootDevices);
            foreach (DomainDisk disk in domain.Disks)
            {
                _ = domain.FindDisk(disk.Target);
            }

            _ = domain.Controllers;
            _ = domain.ToFileText();
        }
        catch (KvmStorageException)
        {
        }
    }
}
