using System.Xml;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
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
        ["qcow2-blocks"] = data => ReadBlocks(data, ImageFormat.Qcow2),
        ["vmdk-blocks"] = data => ReadBlocks(data, ImageFormat.Vmdk),
        ["vdi-blocks"] = data => ReadBlocks(data, ImageFormat.Vdi),
        ["vhd-blocks"] = data => ReadBlocks(data, ImageFormat.Vpc),
        ["vhdx-blocks"] = data => ReadBlocks(data, ImageFormat.Vhdx),
        ["pool-xml"] = ParsePool,
        ["domain-xml"] = ParseDomain,
    };

    internal static string SandboxFolder => Sandbox.Value;

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
                BackingRule = SandboxRule.Instance,
            });
            _ = info.VirtualSize + info.ActualSize;
        }
        catch (KvmStorageException)
        {
        }
    }

    /// <summary>Bytes of the input placed at each <see cref="BlockStride"/> of the image file (see <see cref="ReadBlocks"/>).</summary>
    public const int BlockChunk = 200 * 1024;

    /// <summary>Distance in the image file between two chunks of the input.</summary>
    public const int BlockStride = 1024 * 1024;

    /// <summary>
    /// Opens the input as an image of <paramref name="format"/> with the block layer and reads across it: the
    /// extents of the whole guest range (L1/L2 tables, grain directories and tables, block maps, BATs) and data at
    /// the start of the first extents and at points spread over the disk. All bounded, so a huge claimed size
    /// costs nothing unless the reader itself does unbounded work, which is the finding.
    /// The input is cut into chunks of <see cref="BlockChunk"/> bytes placed <see cref="BlockStride"/> apart in the
    /// file (the rest holes): formats that align their tables to 1 MiB (vhdx regions, vdi and vhd data blocks) fit
    /// AFL's 1 MiB input limit that way. fuzz/New-BlockCorpus.ps1 makes the seeds with the inverse cut.
    /// </summary>
    public static void ReadBlocks(byte[] data, ImageFormat format)
    {
        ArgumentNullException.ThrowIfNull(data);
        string file = Path.Combine(Sandbox.Value, "blocks");
        using (var stream = new FileStream(file, FileMode.Create, FileAccess.Write))
        {
            for (int chunk = 0; chunk * BlockChunk < data.Length; chunk++)
            {
                stream.Position = (long)chunk * BlockStride;
                stream.Write(data.AsSpan(chunk * BlockChunk, Math.Min(BlockChunk, data.Length - (chunk * BlockChunk))));
            }
        }

        try
        {
            using IBlockReader reader = BlockReaders.Open(file, new BlockOpenOptions
            {
                Format = format,
                ForceShare = true,
                BackingRule = SandboxRule.Instance,
            });
            ulong size = reader.Size;
            byte[] buffer = new byte[64 * 1024];
            ulong budget = 2 * 1024 * 1024;
            int extents = 0;
            ulong expected = 0;
            foreach (Extent extent in reader.GetExtents(0, size))
            {
                if (extent.Offset != expected || extent.Length == 0 || extent.End > size)
                {
                    throw new InvalidOperationException($"GetExtents broke its contract: {extent} after {expected} in a disk of {size} bytes.");
                }

                expected = extent.End;
                if (extent.Kind != ExtentKind.Unallocated && budget > 0)
                {
                    int n = (int)Math.Min(Math.Min(extent.Length, (ulong)buffer.Length), budget);
                    reader.Read(extent.Offset, buffer.AsSpan(0, n));
                    budget -= (ulong)n;
                }

                if (++extents == 1024)
                {
                    break;
                }
            }

            if (extents < 1024 && expected != size)
            {
                throw new InvalidOperationException($"GetExtents covered {expected} of {size} bytes.");
            }

            for (ulong i = 0; i < 8 && size > 0; i++)
            {
                ulong at = (size / 8 * i) & ~511UL;
                int n = (int)Math.Min(4096, size - at);
                reader.Read(at, buffer.AsSpan(0, n));
                foreach (Extent extent in reader.GetExtents(at, (ulong)n))
                {
                    _ = extent.Kind;
                }
            }
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

/// <summary>Backing names resolve inside the fuzz sandbox: a fuzzed absolute name must not make a target read /dev/stdin.</summary>
internal sealed class SandboxRule : BackingFileRule
{
    public static readonly SandboxRule Instance = new();

    public override string Resolve(string imagePath, string backingName) =>
        Path.IsPathRooted(backingName) ? Path.Combine(FuzzTargets.SandboxFolder, "host", backingName.TrimStart('/')) : base.Resolve(imagePath, backingName);
}
