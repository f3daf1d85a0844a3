using System.Management.Automation;
using KvmStorage.Core.Hosting;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.LibvirtHost;

/// <summary>Disconnect-LibvirtHost: closes libvirt connections (the session's default one when none is given).</summary>
[Cmdlet(VerbsCommunications.Disconnect, "LibvirtHost", DefaultParameterSetName = DefaultSet)]
[OutputType(typeof(void))]
public sealed class DisconnectLibvirtHostCommand : KvmCmdlet
{
    private const string DefaultSet = "Default";
    private const string ByObject = "ByObject";
    private const string ByUri = "ByUri";

    /// <summary>The connections to close, as Connect-LibvirtHost or Get-LibvirtHost emit them.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ParameterSetName = ByObject)]
    public KvmConnection[] InputObject { get; set; } = [];

    /// <summary>URIs of open connections to close; wildcards allowed.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByUri)]
    [SupportsWildcards]
    public string[] Uri { get; set; } = [];

    protected override void ProcessRecord()
    {
        switch (ParameterSetName)
        {
            case ByObject:
                foreach (KvmConnection connection in InputObject)
                {
                    KvmSession.Close(connection);
                }

                break;
            case ByUri:
                foreach (string uri in Uri)
                {
                    var pattern = new WildcardPattern(uri, WildcardOptions.IgnoreCase);
                    List<KvmConnection> matches = KvmSession.Connections.Where(c => pattern.IsMatch(c.Uri)).ToList();
                    if (matches.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(uri))
                    {
                        WriteError(ConnectionErrorIds.ConnectionNotFound, ErrorCategory.ObjectNotFound, $"No open connection has the URI '{uri}'. Get-LibvirtHost lists the open ones.", uri);
                    }

                    matches.ForEach(KvmSession.Close);
                }

                break;
            default:
                if (KvmSession.Default is { } current)
                {
                    KvmSession.Close(current);
                }
                else
                {
                    WriteError(ConnectionErrorIds.ConnectionNotFound, ErrorCategory.ObjectNotFound, "No connection is open in this session.", null);
                }

                break;
        }
    }
}
