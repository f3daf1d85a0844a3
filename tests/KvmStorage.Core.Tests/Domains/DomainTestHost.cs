using KvmStorage.Core.Backends;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>A scratch host root holding copies of the captured domain files.</summary>
internal sealed class DomainTestHost : IDisposable
{
    private readonly TempDirectory temp = new();

    public DomainTestHost(params string[] fixtures)
    {
        Paths = new HostPaths(temp.Path);
        Directory.CreateDirectory(Paths.QemuConfigDir);
        foreach (string fixture in fixtures)
        {
            // web01-commented.xml is stored as web01.xml: the file name must match <name>.
            string name = fixture.Split('-')[0];
            File.Copy(FixturePath(fixture + ".xml"), ConfigFile(name));
        }

        Store = new DomainStore(Paths);
    }

    public HostPaths Paths { get; }

    public DomainStore Store { get; }

    public static string FixturePath(string file) => Path.Combine(AppContext.BaseDirectory, "Domains", "Fixtures", file);

    public static string FixtureText(string file) => File.ReadAllText(FixturePath(file));

    public string ConfigFile(string name) => Path.Combine(Paths.QemuConfigDir, name + ".xml");

    public string Read(string name) => File.ReadAllText(ConfigFile(name));

    /// <summary>Lines added and removed between two texts, as multisets, each sorted ordinally (compare with <see cref="Lines"/>).</summary>
    public static (List<string> Added, List<string> Removed) LineDiff(string before, string after)
    {
        var a = before.Split('\n').ToList();
        var b = after.Split('\n').ToList();
        var added = new List<string>(b);
        var removed = new List<string>();
        foreach (string line in a)
        {
            if (!added.Remove(line))
            {
                removed.Add(line);
            }
        }

        added.Sort(StringComparer.Ordinal);
        removed.Sort(StringComparer.Ordinal);
        return (added, removed);
    }

    /// <summary>Expected diff lines, sorted the way <see cref="LineDiff"/> returns them.</summary>
    public static List<string> Lines(params string[] lines) => lines.Order(StringComparer.Ordinal).ToList();

    /// <summary>Runs virt-xml-validate on a file; skips the test when the oracle is missing.</summary>
    public static void AssertValidates(string path)
    {
        ExternalTool.Require("virt-xml-validate");
        ExternalTool.Require("xmllint");
        ExternalTool.Result result = ExternalTool.Run("virt-xml-validate", path, "domain");
        Assert.True(result.ExitCode == 0, $"virt-xml-validate {path} exited {result.ExitCode}: {result.Stderr}{result.Stdout}\n{File.ReadAllText(path)}");
    }

    public void Dispose() => temp.Dispose();
}
