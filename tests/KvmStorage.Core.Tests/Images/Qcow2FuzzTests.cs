using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>Mutated qcow2 headers either inspect or fail with KvmStorageException, never anything else.</summary>
public sealed class Qcow2FuzzTests : IDisposable
{
    private static readonly int[] FieldOffsets = [8, 16, 20, 24, 32, 36, 40, 48, 56, 60, 64, 72, 80, 88, 96, 100];
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string> Variants() => ["v3", "v2-backing", "512-cluster", "snapshots", "prealloc-metadata"];

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Mutated_headers_fail_only_with_typed_errors(string variant)
    {
        byte[] original = MakeVariant(variant);
        var random = new Random(variant.GetHashCode(StringComparison.Ordinal) ^ 20240601);
        string path = temp.Combine("fuzz.qcow2");
        ulong snapshotTable = BinaryPrimitives.ReadUInt64BigEndian(original.AsSpan(64));
        int typed = 0;
        for (int iteration = 0; iteration < 1000; iteration++)
        {
            byte[] bytes = Mutate(original, random, snapshotTable);
            File.WriteAllBytes(path, bytes);
            try
            {
                ImageInspector.Inspect(path, new ImageInspectOptions { ForceShare = true });
            }
            catch (KvmStorageException)
            {
                typed++;
            }
        }

        Assert.True(typed > 0);
    }

    private static byte[] Mutate(byte[] original, Random random, ulong snapshotTable)
    {
        byte[] bytes = (byte[])original.Clone();
        int kind = random.Next(5);
        switch (kind)
        {
            case 0:
                for (int i = random.Next(1, 9); i > 0; i--)
                {
                    bytes[random.Next(Math.Min(1024, bytes.Length))] = (byte)random.Next(256);
                }

                break;
            case 1:
                Array.Resize(ref bytes, random.Next(bytes.Length));
                break;
            case 2:
                int offset = FieldOffsets[random.Next(FieldOffsets.Length)];
                ulong value = random.Next(4) switch
                {
                    0 => ulong.MaxValue,
                    1 => (ulong)random.NextInt64() << random.Next(32),
                    2 => 1UL << random.Next(64),
                    _ => (ulong)random.Next(0, 70000),
                };
                if (offset is 16 or 20 or 32 or 36 or 56 or 60 or 96 or 100)
                {
                    BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(offset), (uint)value);
                }
                else
                {
                    BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(offset), value);
                }

                break;
            case 3 when snapshotTable != 0 && snapshotTable + 64 < (ulong)bytes.Length:
                for (int i = random.Next(1, 6); i > 0; i--)
                {
                    bytes[(int)snapshotTable + random.Next(64)] = (byte)random.Next(256);
                }

                break;
            default:
                // Extension area: lengths and types of header extensions.
                for (int i = random.Next(1, 4); i > 0; i--)
                {
                    bytes[random.Next(72, Math.Min(0x220, bytes.Length))] = (byte)random.Next(256);
                }

                break;
        }

        return bytes;
    }

    private byte[] MakeVariant(string variant)
    {
        string path = temp.Combine(variant + ".qcow2");
        switch (variant)
        {
            case "v3":
                ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 1 << 30 });
                break;
            case "v2-backing":
                ImageCreator.Create(temp.Combine("base.qcow2"), new ImageCreateOptions { VirtualSize = 1 << 20 });
                ImageCreator.Create(path, new ImageCreateOptions { Compat = "0.10", BackingFile = "base.qcow2" });
                break;
            case "512-cluster":
                ImageCreator.Create(path, new ImageCreateOptions { ClusterSize = 512, RefcountBits = 1, VirtualSize = 1 << 24 });
                break;
            case "prealloc-metadata":
                ImageCreator.Create(path, new ImageCreateOptions { ClusterSize = 4096, Preallocation = Preallocation.Metadata, VirtualSize = 1 << 18 });
                break;
            default:
                ExternalTool.Require("qemu-img");
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "16M");
                ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "one", path);
                ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "two", path);
                break;
        }

        return File.ReadAllBytes(path);
    }
}
