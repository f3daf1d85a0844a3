using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Test-Volume: checks an image's metadata like <c>qemu-img check</c> and, with -Repair, fixes it.</summary>
[Cmdlet(VerbsDiagnostic.Test, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(ImageCheckResult))]
public sealed class TestVolumeCommand : KvmCmdlet
{
    private const string ByVolume = "ByVolume";
    private const string ByPath = "ByPath";
    private const string ByLiteralPath = "ByLiteralPath";

    /// <summary>The volume: an object from Get-Volume or a path to an image file.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByVolume, ValueFromPipeline = true)]
    [ValidateNotNull]
    public VolumeReference[] Volume { get; set; } = [];

    /// <summary>Image files; wildcards allowed.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPath)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    /// <summary>Image files, taken literally (Get-ChildItem output binds here).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLiteralPath, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    /// <summary>None (default: only check, read-only), Leaks (free leaked clusters) or All (also rebuild refcounts and fix entries).</summary>
    [Parameter]
    public ImageRepairMode Repair { get; set; } = ImageRepairMode.None;

    protected override void ProcessRecord()
    {
        switch (ParameterSetName)
        {
            case ByPath:
                foreach (string pattern in Path)
                {
                    RunForItem(pattern, () =>
                    {
                        foreach (VolumeSpec file in ExpandPathPattern(pattern))
                        {
                            CheckOne(file);
                        }
                    });
                }

                break;
            case ByLiteralPath:
                foreach (string path in LiteralPath)
                {
                    CheckOne(SpecOfPath(path));
                }

                break;
            default:
                foreach (VolumeReference volume in Volume)
                {
                    RunForItem(volume, () => CheckOne(SpecOf(volume)));
                }

                break;
        }
    }

    private void CheckOne(VolumeSpec spec)
    {
        RunForItem(spec.ToString(), () =>
        {
            VolumeAction<ImageCheckResult> check = Volumes.Check(spec, Repair);

            // Checking is read-only and never asks; only a repair writes, so only a repair is confirmed.
            if (Repair != ImageRepairMode.None && !ShouldProcess(check.Target, check.Description))
            {
                return;
            }

            string activity = Repair == ImageRepairMode.None ? "Checking" : "Checking and repairing";
            ImageCheckResult result = RunWithProgress("Test-Volume", $"{activity} {System.IO.Path.GetFileName(check.Target)}", check.Run);
            if (result.MarkedCorrupt)
            {
                WriteWarning($"'{check.Target}' is marked corrupt: QEMU will not open it for writing until 'Test-Volume -Repair All' clears the mark.");
            }

            WriteObject(result);
        });
    }
}
