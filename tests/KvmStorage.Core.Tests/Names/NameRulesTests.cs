using System.Text;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Qcow2.Snapshots;
using KvmStorage.Core.IO;
using KvmStorage.Core.Names;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Tests.Support;
using KvmStorage.Core.Volumes;
using Xunit;

namespace KvmStorage.Core.Tests.Names;

public sealed class NameRulesTests
{
    private const ulong TiB = 1UL << 40;

    // Names every kind refuses: (label, name, the code point the message must name or null).
    private static readonly (string Label, string Name, string? CodePoint)[] Shared =
    [
        ("empty", string.Empty, null),
        ("lone low surrogate", "s\uDC00.qcow2", "U+DC00"),
        ("lone high surrogate", "s\uD800.qcow2", "U+D800"),
        ("high surrogate at the end", "s\uD83D", "U+D83D"),
        ("swapped pair", "s\uDE00\uD83D", "U+DE00"),
        ("right-to-left override", "evil\u202Egpj.qcow2", "U+202E"),
        ("left-to-right isolate", "a\u2066b", "U+2066"),
        ("zero-width space", "a\u200Bb", "U+200B"),
        ("zero-width joiner", "a\u200Db", "U+200D"),
        ("byte order mark", "\uFEFFdisk", "U+FEFF"),
        ("soft hyphen", "dis\u00ADk", "U+00AD"),
        ("tag character (a pair of category Cf)", "a\U000E0041b", "U+E0041"),
        ("tab", "a\tb", "U+0009"),
        ("newline", "a\nb", "U+000A"),
        ("NUL", "a\0b", "U+0000"),
        ("escape", "a\u001B[31m", "U+001B"),
        ("DEL", "a\u007Fb", "U+007F"),
        ("C1 control", "a\u0085b", "U+0085"),
        ("line separator", "a\u2028b", "U+2028"),
        ("paragraph separator", "a\u2029b", "U+2029"),
        ("spaces only", "   ", null),
        ("a tab only", "\t", "U+0009"),
        ("no-break spaces only", "\u00A0\u3000", null),
    ];

    // Names every kind accepts.
    private static readonly string[] Good =
    [
        "disk.qcow2",
        "web01",
        "a_b-c.d",
        "Übergröße",
        "日本語のディスク",
        "emoji-😀",
        "café",
        "cafe\u0301",
        "x" + new string('y', 200),
    ];

    public static TheoryData<string, string> Kinds => new()
    {
        { "pool", PoolErrorIds.InvalidPoolName },
        { "volume", VolumeErrorIds.InvalidVolumeName },
        { "snapshot", ImageErrorIds.InvalidSnapshotName },
        { "vm", DomainErrorIds.InvalidVMName },
    };

    public static TheoryData<string, string, string> SharedCases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (string kind in new[] { "pool", "volume", "snapshot", "vm" })
        {
            foreach ((string label, string _, string? _) in Shared)
            {
                data.Add(kind, ErrorIdOf(kind), label);
            }
        }

        return data;
    }

    // Each kind's own rules on top of the shared one: (kind, name, accepted).
    public static TheoryData<string, string, bool> SpecificCases() => new()
    {
        { "pool", new string('p', 251), true },
        { "pool", new string('p', 252), false },
        { "pool", new string('é', 125), true },
        { "pool", new string('é', 126), false },
        { "pool", "a/b", false },
        { "pool", ".hidden", false },
        { "pool", "-x", false },
        { "pool", " padded", false },
        { "pool", "padded ", false },
        { "pool", "..", false },
        { "volume", new string('v', 255), true },
        { "volume", new string('v', 256), false },
        { "volume", new string('v', 300), false },
        { "volume", "😀" + new string('v', 251), true },
        { "volume", "😀" + new string('v', 252), false },
        { "volume", "sub/dir.qcow2", false },
        { "volume", "..", false },
        { "volume", "-rf", false },
        { "volume", AtomicFile.TempPrefix + "x", false },
        { "volume", " leading space.qcow2", true },
        { "snapshot", new string('s', 255), true },
        { "snapshot", new string('s', 256), false },
        { "snapshot", "before/after upgrade", true },
        { "snapshot", ".", true },
        { "vm", new string('m', 251), true },
        { "vm", new string('m', 252), false },
        { "vm", "a/b", false },
        { "vm", ".hidden", false },
        { "vm", "..", false },
    };

    [Theory]
    [MemberData(nameof(SharedCases))]
    public void Every_kind_refuses_the_shared_bad_names_with_its_own_id_and_a_printable_message(string kind, string errorId, string label)
    {
        (string _, string name, string? codePoint) = Array.Find(Shared, c => c.Label == label);
        KvmStorageException e = Assert.Throws<KvmStorageException>(() => Validate(kind, name));
        Assert.Equal((ErrorKind.InvalidArgument, errorId), (e.Kind, e.ErrorId));
        AssertPrintable(e.Message);
        if (codePoint is not null)
        {
            Assert.Contains(codePoint, e.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Every_kind_accepts_names_that_round_trip(string kind, string errorId)
    {
        Assert.NotEmpty(errorId);
        foreach (string name in Good)
        {
            Validate(kind, name);
        }
    }

    [Theory]
    [MemberData(nameof(SpecificCases))]
    public void Each_kind_keeps_its_own_rules(string kind, string name, bool accepted)
    {
        if (accepted)
        {
            Validate(kind, name);
        }
        else
        {
            KvmStorageException e = Assert.Throws<KvmStorageException>(() => Validate(kind, name));
            Assert.Equal(ErrorIdOf(kind), e.ErrorId);
        }
    }

    [Fact]
    public void The_shared_rule_refuses_exactly_what_would_not_round_trip_or_is_invisible()
    {
        foreach ((string label, string name, string? _) in Shared)
        {
            Assert.True(NameRules.Check(name) is not null, label);
        }

        foreach (string name in Good)
        {
            Assert.Null(NameRules.Check(name));
            Assert.Equal(name, Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(name)));
        }
    }

    [Fact]
    public void Accepted_names_are_the_names_on_disk()
    {
        using var temp = new TempDirectory();
        foreach (string name in Good)
        {
            File.WriteAllText(temp.Combine(name), string.Empty);
        }

        Assert.Equal(Good.Order(StringComparer.Ordinal), Directory.EnumerateFiles(temp.Path).Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("a\tb", "a<U+0009>b")]
    [InlineData("x\u202Ey", "x<U+202E>y")]
    [InlineData("emoji-😀", "emoji-😀")]
    [InlineData("a\U000E0041", "a<U+E0041>")]
    public void Printable_writes_hidden_characters_as_code_points(string name, string expected)
    {
        Assert.Equal(expected, NameRules.Printable(name));
    }

    [Fact]
    public void Printable_writes_unpaired_surrogates_as_code_points()
    {
        // Not an InlineData: attribute strings are stored as UTF-8, which has no form for half a pair.
        Assert.Equal("z<U+DC00><U+D83D>", NameRules.Printable("z\uDC00\uD83D"));
    }

    [Theory]
    [InlineData("v", 255)]
    [InlineData("é", 127)]
    [InlineData("😀", 63)]
    public void Temporary_names_of_the_longest_names_fit_NAME_MAX(string unit, int count)
    {
        string name = string.Concat(Enumerable.Repeat(unit, count));
        using var temp = new TempDirectory();
        string tempName = Path.GetFileName(AtomicFile.TempPathFor(temp.Combine(name)));
        Assert.StartsWith(AtomicFile.TempPrefix, tempName, StringComparison.Ordinal);
        Assert.InRange(Encoding.UTF8.GetByteCount(tempName), 1, NameRules.MaxFileNameBytes);
        Assert.Null(NameRules.Check(tempName));

        AtomicFile.WriteAllText(temp.Combine(name), "x", UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Equal([name], Directory.EnumerateFiles(temp.Path).Select(p => Path.GetFileName(p)));
    }

    [SkippableFact]
    public void A_raw_image_larger_than_ext4_holds_is_refused_before_anything_is_written()
    {
        using var temp = new TempDirectory();
        FileSystemLimits limits = FileSystemLimits.Get(temp.Path);
        Skip.If(limits.MaxFileSize is null, $"the temporary folder is on {limits.Type ?? "a file system"} with no known file size limit");
        ulong size = (limits.MaxFileSize!.Value + TiB) & ~(TiB - 1);

        KvmStorageException e = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(temp.Combine("big.raw"), new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = size }));
        Assert.Equal((ErrorKind.InvalidArgument, ErrorIds.FileTooLarge), (e.Kind, e.ErrorId));
        Assert.Contains(limits.Type!, e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(temp.Path));

        ImageCreator.Create(temp.Combine("small.raw"), new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = 1 << 20 });
        e = Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(temp.Combine("small.raw"), size, new ImageResizeOptions()));
        Assert.Equal(ErrorIds.FileTooLarge, e.ErrorId);
        Assert.Equal(1L << 20, new FileInfo(temp.Combine("small.raw")).Length);
        Assert.Equal(["small.raw"], Directory.EnumerateFileSystemEntries(temp.Path).Select(p => Path.GetFileName(p)));
    }

    private static string ErrorIdOf(string kind) => kind switch
    {
        "pool" => PoolErrorIds.InvalidPoolName,
        "volume" => VolumeErrorIds.InvalidVolumeName,
        "snapshot" => ImageErrorIds.InvalidSnapshotName,
        _ => DomainErrorIds.InvalidVMName,
    };

    private static void Validate(string kind, string name)
    {
        switch (kind)
        {
            case "pool":
                PoolNames.Validate(name);
                break;
            case "volume":
                VolumeNames.Validate(name);
                break;
            case "snapshot":
                Qcow2SnapshotEditor.ValidateName(name);
                break;
            default:
                DomainStore.ValidateName(name);
                break;
        }
    }

    private static void AssertPrintable(string message)
    {
        for (int i = 0; i < message.Length; i++)
        {
            Assert.False(char.IsSurrogate(message[i]) && !char.IsSurrogatePair(message, i) && !(i > 0 && char.IsSurrogatePair(message, i - 1)), $"raw lone surrogate at {i}: {NameRules.Printable(message)}");
            Assert.False(char.IsControl(message[i]) || char.GetUnicodeCategory(message[i]) == System.Globalization.UnicodeCategory.Format, $"raw hidden character at {i}: {NameRules.Printable(message)}");
        }
    }
}
